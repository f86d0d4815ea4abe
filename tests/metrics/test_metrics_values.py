"""Metrics against independent computations."""

import math

import numpy as np
import torch
from scipy.signal import convolve2d

from vqvae.metrics import bits_per_dim, codebook_stats, nll_bits, psnr_from_mse, ssim
from vqvae.metrics.codebook import CodebookHealth


def test_psnr():
    assert psnr_from_mse(0.01) == 20.0
    assert abs(psnr_from_mse(0.001) - 30.0) < 1e-9


def numpy_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 with an 11×11 σ=1.5 Gaussian window, valid region, range 1."""
    c = np.arange(11) - 5
    g = np.exp(-(c**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()

    def f(a):
        return convolve2d(a, w[::-1, ::-1], mode="valid")

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.random((28, 28))
    y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1)
    ours = ssim(torch.tensor(y)[None, None].float(), torch.tensor(x)[None, None].float())
    assert abs(float(ours[0]) - numpy_ssim(y, x)) < 1e-5
    same = ssim(torch.tensor(x)[None, None].float(), torch.tensor(x)[None, None].float())
    assert abs(float(same[0]) - 1.0) < 1e-6


def test_codebook_stats():
    counts = torch.tensor([5.0, 5.0, 0.0, 0.0])
    s = codebook_stats(counts)
    assert s["codebook_usage"] == 0.5 and s["dead_codes"] == 2
    assert abs(s["perplexity"] - 2.0) < 1e-9


def test_health_window_forgets_old_steps():
    h = CodebookHealth(4, window=2)
    h.update(torch.tensor([1, 0, 0, 0]))
    h.update(torch.tensor([0, 1, 0, 0]))
    h.update(torch.tensor([0, 0, 1, 0]))  # the first step leaves the window
    assert h.stats()["codebook_usage"] == 0.5


def test_nll_bits_uniform_logits():
    logits = torch.zeros(2, 8, 3, 3)
    targets = torch.randint(8, (2, 3, 3))
    assert abs(float(nll_bits(logits, targets)) / targets.numel() - 3.0) < 1e-5
    assert bits_per_dim(3.0, 49, 784) == 3.0 * 49 / 784
    assert math.isclose(bits_per_dim(9.0, 1, 9), 1.0)
