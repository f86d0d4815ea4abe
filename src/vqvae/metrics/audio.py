"""Audio measurements and the spectral transforms they share (pure functions of tensors).

* ``stft_magnitude``: |STFT| with a Hann window (``torch.stft``, centred frames);
* ``mel_filterbank`` / ``log_mel``: triangular filters on the HTK mel scale
  (mel = 2595·log10(1 + f / 700)) and the log mel power spectrogram the digit classifier reads;
* ``snr_db``: signal-to-noise ratio of a reconstruction, 10·log10(Σ x² / Σ (x − x̂)²) over each
  clip's real samples, averaged over clips (in dB);
* ``log_spectral_distance``: for each frame, the RMS over frequency of the difference of the two
  power spectra in dB, sqrt(mean_f (10·log10 P − 10·log10 P̂)²), averaged over the frames whose
  centre lies in the clip's real samples, then over clips (in dB; 0 = identical spectra);
* ``bitrate_bps``: the code stream's rate, codes per second × levels × log2 K.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

POWER_FLOOR = 1e-8  # added to power spectra before the log (|STFT| of samples in [-1, 1])
LOG_MEL_FLOOR = 1e-3  # added to mel power before the log: about 70 dB below a loud frame


def stft_magnitude(
    x: Tensor, n_fft: int, hop: int, win: int | None = None, floor: float = 0.0
) -> Tensor:
    """Waveforms (B, T) -> |STFT| (B, n_fft // 2 + 1, frames), frames = T // hop + 1.

    ``floor`` > 0 clamps magnitudes from below, which also keeps the gradient finite where the
    spectrum is exactly zero (|z| has no derivative at 0)."""
    win = win or n_fft
    window = torch.hann_window(win, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x, n_fft, hop_length=hop, win_length=win, window=window, center=True, return_complex=True
    )
    if floor <= 0:
        return spec.abs()
    return torch.view_as_real(spec).pow(2).sum(-1).clamp_min(floor**2).sqrt()


def _hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the mel scale, each
    peaking at 1 at its centre frequency."""
    f_max = sample_rate / 2 if f_max is None else f_max
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = _mel_to_hz(
        torch.linspace(
            float(_hz_to_mel(torch.tensor(f_min))),
            float(_hz_to_mel(torch.tensor(f_max))),
            n_mels + 2,
            dtype=torch.float64,
        )
    )
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1)
    rising = (bins - lo) / (mid - lo)
    falling = (hi - bins) / (hi - mid)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def log_mel(
    x: Tensor, sample_rate: int, n_fft: int = 256, hop: int = 80, n_mels: int = 40
) -> Tensor:
    """Waveforms (B, T) -> log mel power spectrogram (B, n_mels, T // hop + 1)."""
    power = stft_magnitude(x, n_fft, hop).pow(2)  # (B, F, frames)
    fb = mel_filterbank(n_mels, n_fft, sample_rate).to(x.device, x.dtype)  # (n_mels, F)
    return torch.log(torch.einsum("mf,bft->bmt", fb, power) + LOG_MEL_FLOOR)


def _lengths(lengths: Tensor | None, x: Tensor) -> Tensor:
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[-1], dtype=torch.long)
    return torch.as_tensor(lengths, dtype=torch.long).cpu()


def _check_pair(reference: Tensor, estimate: Tensor) -> None:
    if reference.dim() != 2 or reference.shape != estimate.shape:
        raise ValueError(
            f"expected two (B, T) waveform batches of one shape, got {tuple(reference.shape)} "
            f"and {tuple(estimate.shape)}"
        )


def snr_db(reference: Tensor, estimate: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Per-clip SNR in dB (B,) over each clip's first ``lengths[i]`` samples (all by default)."""
    _check_pair(reference, estimate)
    n = _lengths(lengths, reference)
    mask = (torch.arange(reference.shape[1])[None, :] < n[:, None]).to(reference.device)
    ref = reference.double() * mask
    err = (reference.double() - estimate.double()) * mask
    signal = ref.pow(2).sum(1)
    noise = err.pow(2).sum(1)
    return 10 * torch.log10(signal.clamp_min(1e-20) / noise.clamp_min(1e-20))


def log_spectral_distance(
    reference: Tensor,
    estimate: Tensor,
    lengths: Tensor | None = None,
    n_fft: int = 256,
    hop: int = 64,
) -> Tensor:
    """Per-clip log-spectral distance in dB (B,) (see the module docstring)."""
    _check_pair(reference, estimate)
    n = _lengths(lengths, reference)
    p = stft_magnitude(reference.double(), n_fft, hop).pow(2)  # (B, F, frames)
    q = stft_magnitude(estimate.double(), n_fft, hop).pow(2)
    diff = 10 * torch.log10(p + POWER_FLOOR) - 10 * torch.log10(q + POWER_FLOOR)
    per_frame = diff.pow(2).mean(1).sqrt()  # (B, frames)
    centres = torch.arange(per_frame.shape[1]) * hop  # frame t is centred on sample t·hop
    valid = (centres[None, :] < n[:, None]).to(per_frame.device)
    return (per_frame * valid).sum(1) / valid.sum(1).clamp_min(1)


def bitrate_bps(codes_per_second: float, codebook_size: int, levels: int = 1) -> float:
    """Bits per second of a code stream: codes/s × levels × log2 K."""
    return float(codes_per_second) * max(1, levels) * math.log2(codebook_size)
