"""Audio metrics against independent NumPy computations: SNR, log-spectral distance (own framing
and FFT), the mel filterbank, bitrate; and the multi-resolution STFT loss's basic properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqvae.metrics.audio import (
    POWER_FLOOR,
    bitrate_bps,
    log_mel,
    log_spectral_distance,
    mel_filterbank,
    snr_db,
    stft_magnitude,
)
from vqvae.models.audio_losses import log_mel_loss, multi_resolution_stft_loss


def _np_stft_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred frames (reflect padding), periodic Hann window, |rfft|² -> (F, frames)."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [padded[s : s + n_fft] * window for s in range(0, len(padded) - n_fft + 1, hop)]
    return (np.abs(np.fft.rfft(np.array(frames), axis=1)) ** 2).T


def test_snr_matches_numpy_and_respects_lengths():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3, 400))
    est = ref + rng.normal(scale=0.1, size=ref.shape)
    est[:, 300:] = 50.0  # garbage beyond the real samples must not count
    lengths = np.array([300, 250, 300])
    got = snr_db(torch.tensor(ref), torch.tensor(est), torch.tensor(lengths)).numpy()
    want = [
        10 * np.log10((ref[i, :n] ** 2).sum() / ((ref[i, :n] - est[i, :n]) ** 2).sum())
        for i, n in enumerate(lengths)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # Scaling the error by 1/10 adds exactly 20 dB.
    quieter = ref + (est - ref) / 10
    got2 = snr_db(torch.tensor(ref), torch.tensor(quieter), torch.tensor(lengths)).numpy()
    np.testing.assert_allclose(got2 - got, 20.0, rtol=1e-9)


def test_stft_matches_numpy_framing():
    x = np.random.default_rng(1).normal(size=1000)
    got = stft_magnitude(torch.tensor(x), 256, 64).pow(2).numpy()
    np.testing.assert_allclose(got, _np_stft_power(x, 256, 64), rtol=1e-8, atol=1e-8)


def test_log_spectral_distance_matches_numpy():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(2, 1024)) * 0.3
    est = ref * 0.5 + rng.normal(size=ref.shape) * 0.05
    lengths = np.array([1024, 600])
    got = log_spectral_distance(torch.tensor(ref), torch.tensor(est), torch.tensor(lengths))
    for i, n in enumerate(lengths):
        p = 10 * np.log10(_np_stft_power(ref[i], 256, 64) + POWER_FLOOR)
        q = 10 * np.log10(_np_stft_power(est[i], 256, 64) + POWER_FLOOR)
        per_frame = np.sqrt(((p - q) ** 2).mean(0))
        valid = np.arange(per_frame.size) * 64 < n
        np.testing.assert_allclose(float(got[i]), per_frame[valid].mean(), rtol=1e-9)
    # Identical spectra: 0 dB; a pure gain g shifts every bin by 20·log10(g) dB (floor aside).
    assert float(log_spectral_distance(torch.tensor(ref), torch.tensor(ref)).max()) == 0.0
    scaled = log_spectral_distance(torch.tensor(ref), torch.tensor(ref * 0.5))
    np.testing.assert_allclose(scaled.numpy(), 20 * math.log10(2), rtol=1e-3)


def test_mel_filterbank_against_htk_formula():
    fb = mel_filterbank(10, 256, 8000).numpy()
    assert fb.shape == (10, 129) and fb.min() >= 0 and fb.max() <= 1 + 1e-6
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = inv(np.linspace(0, mel(4000), 12))
    freqs = np.linspace(0, 4000, 129)
    for m in range(10):
        lo, mid, hi = edges[m : m + 3]
        want = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
        np.testing.assert_allclose(fb[m], want, atol=1e-6)
    # Filters cover the band: between the first and last centre every bin is in some filter.
    centre_bins = (edges[1], edges[-2])
    inside = (freqs > centre_bins[0]) & (freqs < centre_bins[1])
    assert (fb[:, inside].sum(0) > 0.99).all()


def test_log_mel_shape_and_floor():
    out = log_mel(torch.zeros(2, 800), 8000, n_fft=256, hop=80, n_mels=20)
    assert out.shape == (2, 20, 11)
    assert torch.allclose(out, torch.full_like(out, math.log(1e-3)))


def test_bitrate():
    assert bitrate_bps(1000.0, 512) == 9000.0
    assert bitrate_bps(250.0, 1024, levels=2) == 5000.0


@pytest.mark.parametrize("shape", [(2, 1, 1024), (3, 1024)])
def test_stft_loss_zero_on_identity_and_gradient_finite_on_silence(shape):
    x = torch.randn(shape) * 0.1
    assert float(multi_resolution_stft_loss(x, x)) == 0.0
    y = torch.zeros(shape, requires_grad=True)  # exact zeros: |STFT| has no derivative there
    loss = multi_resolution_stft_loss(x, y)
    loss.backward()
    assert float(loss.detach()) > 0 and torch.isfinite(y.grad).all()
    with pytest.raises(ValueError, match="shapes differ"):
        multi_resolution_stft_loss(x, x[..., :512])


def test_log_mel_loss():
    x = torch.randn(2, 1, 1024) * 0.1
    assert float(log_mel_loss(x, x, 8000)) == 0.0
    y = torch.zeros_like(x, requires_grad=True)
    loss = log_mel_loss(x, y, 8000, n_fft=256, n_mels=20)
    loss.backward()
    assert float(loss.detach()) > 0 and torch.isfinite(y.grad).all()
    # A pure gain g shifts every log mel magnitude by log g (away from the floor).
    np.testing.assert_allclose(float(log_mel_loss(x, 2 * x, 8000)), math.log(2), rtol=1e-3)
