"""Reconstruction quality for images with values in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB from a mean squared error: 10·log10(range² / MSE)."""
    return 10.0 * math.log10(data_range**2 / max(mse, 1e-12))


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean SSIM per image (Wang et al. 2004): Gaussian window 11×11, σ = 1.5, K1 = 0.01,
    K2 = 0.03, computed on valid positions only. For images smaller than 11 pixels the window
    shrinks to the largest odd size that fits (σ scaled with it). x, y: (B, C, H, W) -> (B,)."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim: expected two (B, C, H, W) tensors, got {x.shape} and {y.shape}")
    x, y = x.double(), y.double()
    size = min(11, min(x.shape[-2:]))
    size -= 1 - size % 2  # odd
    sigma = 1.5 * size / 11
    c = x.shape[1]
    w = _gaussian_window(size, sigma, c, x)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return s.flatten(1).mean(1).float()
