"""Audio measurements and the spectral transforms they share (pure functions of tensors).

* ``stft_magnitude``: |STFT| with a Hann window (``torch.stft``, centred frames);
* ``mel_filterbank`` / ``log_mel``: triangular filters on the HTK mel scale
  (mel = 2595·log10(1 + f / 700)) and the log mel power spectrogram the digit classifier reads;
* ``snr_db``: signal-to-noise ratio of a reconstruction, 10·log10(Σ x² / Σ (x − x̂)²) over each
  clip's real samples, averaged over clips (in dB);
* ``log_spectral_distance``: for each frame, the RMS over frequency of the difference of the two
  power spectra in dB, sqrt(mean_f (10·log10 P − 10·log10 P̂)²), averaged over the frames whose
  centre lies in the clip's real samples, then over clips (in dB; 0 = identical spectra);
* ``bitrate_bps``: the code stream's rate, codes per second × levels × log2 K;
* ``pesq_nb``: narrowband PESQ (ITU-T P.862, the ``pesq`` package, on 8 kHz audio; a MOS-like
  score from about 1 to 4.5) of each clip's real samples, averaged over the clips PESQ scores
  (it refuses clips under 1/4 s and clips where it detects no utterance; their count is kept);
* ``stoi_per_speaker``: STOI (Taal et al. 2011, the ``pystoi`` package; 0–1, higher is more
  intelligible) of each speaker's clips concatenated — its 384-ms intermediate windows are longer
  than many single clips — averaged over the speakers.

PESQ and STOI need the optional ``speech`` extra (``pip install 'vqvae[speech]'``); without it
they raise ``SpeechExtraMissing``, whose message says so.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vqvae.data.audio import resample
from vqvae.errors import VQVAEError

POWER_FLOOR = 1e-8  # added to power spectra before the log (|STFT| of samples in [-1, 1])
LOG_MEL_FLOOR = 1e-3  # added to mel power before the log: about 70 dB below a loud frame
PESQ_RATE = 8000  # narrowband PESQ is defined on 8 kHz audio


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


# --------------------------------------------------------------------------- speech quality


class SpeechExtraMissing(VQVAEError, ImportError):
    """PESQ or STOI was asked for without the optional ``speech`` extra installed."""


def _speech_package(name: str) -> Any:
    """``pesq`` or ``pystoi``, imported on first use (an optional extra)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SpeechExtraMissing(
            f"{'PESQ' if name == 'pesq' else 'STOI'} needs the `{name}` package: "
            "pip install 'vqvae[speech]'"
        ) from exc


@dataclass(frozen=True)
class PesqScore:
    """Mean narrowband PESQ over the clips scored (NaN when none was), and the counts."""

    mean: float
    scored: int
    unscored: int  # clips PESQ refused: shorter than 1/4 s, or no utterance detected


def _real_clips(x: Tensor | np.ndarray, lengths: Any) -> list[np.ndarray]:
    """(B, T) waveforms -> each clip's first ``lengths[i]`` samples, float64."""
    x = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a (B, T) waveform batch, got shape {x.shape}")
    n = np.full(len(x), x.shape[1]) if lengths is None else np.asarray(lengths, dtype=np.int64)
    return [clip[:k] for clip, k in zip(x, n, strict=True)]


def _speech_pair(
    reference: Tensor | np.ndarray, degraded: Tensor | np.ndarray, lengths: Any
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if tuple(reference.shape) != tuple(degraded.shape):
        raise ValueError(
            f"expected two (B, T) waveform batches of one shape, got {tuple(reference.shape)} "
            f"and {tuple(degraded.shape)}"
        )
    return _real_clips(reference, lengths), _real_clips(degraded, lengths)


def pesq_nb(
    reference: Tensor | np.ndarray,
    degraded: Tensor | np.ndarray,
    rate: int,
    lengths: Any = None,
) -> PesqScore:
    """Narrowband PESQ of each clip's real samples (all by default), resampled to 8 kHz when
    ``rate`` differs, averaged over the clips PESQ scores (see the module docstring)."""
    pesq = _speech_package("pesq")
    refs, degs = _speech_pair(reference, degraded, lengths)
    if rate != PESQ_RATE:
        refs = [resample(r, rate, PESQ_RATE) for r in refs]
        degs = [resample(d, rate, PESQ_RATE) for d in degs]
    scores = []
    for ref, deg in zip(refs, degs, strict=True):
        try:
            with np.errstate(divide="ignore", invalid="ignore"):  # silent clips: refused below
                scores.append(float(pesq.pesq(PESQ_RATE, ref, deg, "nb")))
        except (pesq.BufferTooShortError, pesq.NoUtterancesError):
            continue
    mean = float(np.mean(scores)) if scores else float("nan")
    return PesqScore(mean, len(scores), len(refs) - len(scores))


def stoi_per_speaker(
    reference: Tensor | np.ndarray,
    degraded: Tensor | np.ndarray,
    rate: int,
    speakers: Any = None,
    lengths: Any = None,
) -> float:
    """STOI of each speaker's clips (real samples, in order) concatenated, reference and
    degraded alike, averaged over the speakers; ``speakers`` None: all clips are one speaker."""
    pystoi = _speech_package("pystoi")
    refs, degs = _speech_pair(reference, degraded, lengths)
    ids = np.zeros(len(refs), np.int64) if speakers is None else np.asarray(speakers)
    if ids.shape != (len(refs),):
        raise ValueError(f"expected {len(refs)} speaker ids, got shape {ids.shape}")
    scores = []
    for speaker in np.unique(ids):
        which = np.flatnonzero(ids == speaker)
        ref = np.concatenate([refs[i] for i in which])
        deg = np.concatenate([degs[i] for i in which])
        scores.append(float(pystoi.stoi(ref, deg, rate, extended=False)))
    return float(np.mean(scores)) if scores else float("nan")
