"""Waveform reconstruction losses: the multi-resolution STFT loss and the log-mel loss.

Yamamoto et al. 2020 ("Parallel WaveGAN", eq. 4-6): at each STFT resolution m,

    L_sc  = || |S| - |Ŝ| ||_F / || |S| ||_F          (spectral convergence)
    L_mag = mean | log|S| - log|Ŝ| |                 (log STFT magnitude)

and the loss is their sum averaged over resolutions. A time-domain term (MSE) is added by the
model; the spectral terms ignore phase, which is what makes reconstructions sound right rather
than merely match sample by sample, and the several window sizes trade time for frequency
resolution so no single one dominates.

The log-mel loss (as in HiFi-GAN, Kong et al. 2020, sec. 2.3) is the L1 distance of log mel
magnitude spectrograms: the mel scale spends its bands where speech keeps its formants, so this
term weighs what makes words recognisable more than the linear-frequency terms do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqvae.metrics.audio import mel_filterbank, stft_magnitude

MAGNITUDE_FLOOR = 1e-5  # |STFT| floor: silence (padding) does not dominate the log term


def multi_resolution_stft_loss(
    target: Tensor, estimate: Tensor, fft_sizes: tuple[int, ...] = (512, 256, 128)
) -> Tensor:
    """Waveforms (B, C, T) or (B, T) -> scalar loss; hop = n / 4 and window = n (Hann) for each
    FFT size n."""
    if target.shape != estimate.shape:
        raise ValueError(f"shapes differ: {tuple(target.shape)} vs {tuple(estimate.shape)}")
    x = target.reshape(-1, target.shape[-1])  # (B·C, T)
    y = estimate.reshape(-1, estimate.shape[-1])
    total = target.new_zeros(())
    for n in fft_sizes:
        s = stft_magnitude(x, n, n // 4, floor=MAGNITUDE_FLOOR)  # (B·C, F, frames)
        s_hat = stft_magnitude(y, n, n // 4, floor=MAGNITUDE_FLOOR)
        convergence = torch.linalg.norm(s - s_hat) / torch.linalg.norm(s)
        magnitude = (torch.log(s) - torch.log(s_hat)).abs().mean()
        total = total + convergence + magnitude
    return total / len(fft_sizes)


def log_mel_loss(
    target: Tensor, estimate: Tensor, sample_rate: int, n_fft: int = 512, n_mels: int = 64
) -> Tensor:
    """Mean |log mel(|S|) - log mel(|Ŝ|)| with hop n_fft / 4; waveforms (B, C, T) or (B, T)."""
    if target.shape != estimate.shape:
        raise ValueError(f"shapes differ: {tuple(target.shape)} vs {tuple(estimate.shape)}")
    fb = mel_filterbank(n_mels, n_fft, sample_rate).to(target.device, target.dtype)
    x = target.reshape(-1, target.shape[-1])
    y = estimate.reshape(-1, estimate.shape[-1])
    mel = [
        torch.einsum("mf,bft->bmt", fb, stft_magnitude(z, n_fft, n_fft // 4, floor=MAGNITUDE_FLOOR))
        for z in (x, y)
    ]
    return (torch.log(mel[0] + MAGNITUDE_FLOOR) - torch.log(mel[1] + MAGNITUDE_FLOOR)).abs().mean()
