"""The 1D VQ-VAE for audio and other sequences (``model.kind = "audio"``).

x (B, C, T) -> ``Encoder1d`` -> z_e (B, D, T / d) -> nearest code -> z_q -> ``Decoder1d`` -> x̂.
Loss = time_weight · MSE(x, x̂) / data_variance + stft_weight · multi-resolution STFT loss
+ mel_weight · log-mel L1 (``vqvae.models.audio_losses``) + codebook + β·commitment (van den Oord
et al. 2017, eq. 3). With ``stft_weight = mel_weight = 0`` it is a plain MSE sequence model for
non-audio signals.

Clips have a fixed ``length`` (padding and cropping rule: ``vqvae.data.audio``). Training reads
random ``window``-sample crops of them (convolutions do not care about the length, and short crops
make a step cheap); ``encode``/``decode_indices`` work on any length divisible by ``downsample``,
so whole clips are encoded to ``length / downsample`` codes: ``sample_rate / downsample`` codes
per second.

With ``causal = true`` every convolution sees only the past, and the model also streams:
``stream_encoder()`` / ``stream_decoder()`` (``vqvae.models.audio_stream``) code chunks of any
whole number of hops (``downsample`` samples) into the offline pass's codes and output, with an
algorithmic latency of one hop (``latency_samples``; no lookahead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.errors import ConfigError
from vqvae.models.audio_losses import log_mel_loss, multi_resolution_stft_loss
from vqvae.models.audio_stream import StreamDecoder, StreamEncoder
from vqvae.nets.conv1d import Decoder1d, Encoder1d
from vqvae.nets.modes import eval_mode
from vqvae.quantizers import QuantizerConfig, QuantizerOutput, build_quantizer
from vqvae.serialization import Pretrained


@dataclass
class AudioVQVAEConfig:
    kind: Literal["audio"] = "audio"  # the model family (see vqvae.models.build_model)
    in_channels: int = 1
    sample_rate: int = 8000  # files at other rates are resampled to it
    length: int = 6144  # samples per clip (shorter clips zero-padded, longer ones cut)
    peak_normalize: bool = True  # scale each clip to peak 0.95 when loading
    window: int = 2048  # training crop in samples (0 = whole clips)
    downsample: int = 16  # T / T' (a power of two, 4 .. 64 are typical)
    hidden: int = 128  # channels at the code rate (halved at each finer level, >= 16)
    res_blocks: int = 2  # dilated residual units at every time resolution
    causal: bool = False  # convolutions see only the past: the model streams (stream_encoder)
    time_weight: float = 1.0  # weight of MSE / data_variance
    stft_weight: float = 1.0  # weight of the multi-resolution STFT loss (0 = off)
    stft_sizes: tuple[int, ...] = (512, 256, 128)  # FFT sizes (hop = n / 4)
    mel_weight: float = 1.0  # weight of the log-mel L1 loss (0 = off)
    mel_fft: int = 512  # its FFT size (hop = n / 4)
    mel_bands: int = 64
    data_variance: float | None = None  # None: taken from the training clips (1.0 without data)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        def bad(option: str, message: str) -> ConfigError:
            return ConfigError(f"model.{option} {message}")

        d = self.downsample
        if d < 2 or d & (d - 1):
            raise bad("downsample", f"must be a power of two >= 2, got {d}")
        for name in ("in_channels", "sample_rate", "length"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.length % d:
            raise bad("length", f"= {self.length} is not divisible by model.downsample {d}")
        if self.window < 0 or self.window % d or self.window > self.length:
            raise bad(
                "window",
                f"must be 0 or a multiple of model.downsample ({d}) no longer than "
                f"model.length ({self.length}), got {self.window}",
            )
        if self.hidden < 2 or self.res_blocks < 0:
            raise bad("hidden", f"/ res_blocks out of range ({self.hidden}, {self.res_blocks})")
        weights = (self.time_weight, self.stft_weight, self.mel_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise bad("time_weight", ", stft_weight and mel_weight must be >= 0 and not all 0")
        if any(n < 8 for n in self.stft_sizes) or (self.stft_weight and not self.stft_sizes):
            raise bad("stft_sizes", f"must be FFT sizes >= 8, got {list(self.stft_sizes)}")
        shortest = self.window or self.length
        if self.stft_weight and max(self.stft_sizes) > shortest:
            raise bad(
                "stft_sizes",
                f"largest FFT size {max(self.stft_sizes)} exceeds the training crop {shortest}",
            )
        if self.mel_weight and not (8 <= self.mel_fft <= shortest and self.mel_bands >= 1):
            raise bad(
                "mel_fft",
                f"must lie in [8, {shortest}] (the training crop) with mel_bands >= 1, got "
                f"{self.mel_fft} and {self.mel_bands}",
            )
        if self.data_variance is not None and not self.data_variance > 0:
            raise bad("data_variance", f"must be > 0, got {self.data_variance}")

    @property
    def codes_per_clip(self) -> int:
        return self.length // self.downsample

    @property
    def codes_per_second(self) -> float:
        return self.sample_rate / self.downsample


@dataclass
class AudioVQVAEOutput:
    reconstruction: Tensor  # (B, C, T)
    time_loss: Tensor  # MSE per sample, unnormalised
    stft_loss: Tensor  # multi-resolution STFT loss (0 when stft_weight = 0)
    mel_loss: Tensor  # log-mel L1 (0 when mel_weight = 0)
    quantizer: QuantizerOutput
    loss: Tensor  # the training objective


class AudioVQVAE(Pretrained, nn.Module):
    config_class = AudioVQVAEConfig

    def __init__(self, config: AudioVQVAEConfig) -> None:
        super().__init__()
        self.config = config
        c, q = config, config.quantizer
        shape = (c.hidden, c.res_blocks)
        self.encoder = Encoder1d(c.in_channels, *shape, q.dim, c.downsample, c.causal)
        self.quantizer = build_quantizer(q)
        self.decoder = Decoder1d(q.dim, *shape, c.in_channels, c.downsample, c.causal)

    # --- the forward pass -------------------------------------------------------------------
    def forward(self, x: Tensor) -> AudioVQVAEOutput:
        x = self._check_signal(x)
        q = self.quantizer(self.encoder(x))  # (B, D, T / d)
        out = self.decoder(q.quantized).float()  # (B, C, T); fp32 losses under autocast too
        c = self.config
        time_loss = F.mse_loss(out, x)
        zero = out.new_zeros(())
        stft_loss = multi_resolution_stft_loss(x, out, c.stft_sizes) if c.stft_weight else zero
        mel_loss = (
            log_mel_loss(x, out, c.sample_rate, c.mel_fft, c.mel_bands) if c.mel_weight else zero
        )
        loss = (
            c.time_weight * time_loss / (c.data_variance or 1.0)
            + c.stft_weight * stft_loss
            + c.mel_weight * mel_loss
            + q.loss
        )
        return AudioVQVAEOutput(out, time_loss, stft_loss, mel_loss, q, loss)

    def crop(self, waves: Tensor, lengths: Tensor | None) -> Tensor:
        """Random ``window``-sample crops (B, C, window) of clips (B, C, L), each starting
        uniformly where the crop stays inside the clip's real samples when it can (a clip shorter
        than the window starts at 0). Draws from torch's global generator, which the training
        loop seeds and checkpoints, so runs and resumes are reproducible."""
        w, total = self.config.window, waves.shape[-1]
        if not w or w >= total:
            return waves
        real = torch.full((len(waves),), total) if lengths is None else lengths.cpu()
        room = (real - w).clamp(0, total - w)  # (B,) latest start
        start = (torch.rand(len(waves)) * (room + 1)).long().clamp_max(total - w)
        idx = (start[:, None] + torch.arange(w)).to(waves.device)  # (B, w)
        return waves.gather(-1, idx[:, None, :].expand(-1, waves.shape[1], -1))

    def training_losses(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """``batch = (waveforms (B, L) or (B, C, L), lengths (B,) or None)``: the loss on random
        crops, scalar metrics and the batch's code counts."""
        waves, lengths = batch[0], batch[1] if len(batch) > 1 else None
        x = self.crop(self._check_signal(waves), lengths)
        out = self(x)
        q = out.quantizer
        with torch.no_grad():
            err = (out.reconstruction - x).pow(2).sum()
            snr = 10 * torch.log10(x.pow(2).sum().clamp_min(1e-12) / err.clamp_min(1e-12))
        return {
            "loss": out.loss,
            "recon": out.time_loss.detach(),
            "stft": out.stft_loss.detach(),
            "mel": out.mel_loss.detach(),
            "commitment": q.commitment_loss.detach(),
            "snr": snr,
            "code_counts": q.code_counts,
        }

    # --- the index level --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Signals (B, C, T) (or (B, T) when mono) -> indices (B, T / d), or (B, L, T / d) for a
        residual quantizer. Uses eval-mode behaviour."""
        with eval_mode(self):
            return self.quantizer(self.encoder_output(x)).indices

    def encoder_output(self, x: Tensor) -> Tensor:
        """Signals (B, C, T) (or (B, T) when mono) -> z_e (B, D, T / d)."""
        return self.encoder(self._check_signal(x))

    def decode_quantized(self, quantized: Tensor) -> Tensor:
        """z_q (B, D, t) -> signals (B, C, t · downsample)."""
        return self.decoder(quantized)

    # --- streaming (causal models) -----------------------------------------------------------
    def stream_encoder(self) -> StreamEncoder:
        """Samples in, codes out, chunk by chunk (``StreamEncoder.push``)."""
        return StreamEncoder(self)

    def stream_decoder(self) -> StreamDecoder:
        """Codes in, samples out, chunk by chunk (``StreamDecoder.push``)."""
        return StreamDecoder(self)

    @property
    def latency_samples(self) -> int | None:
        """Algorithmic latency of streaming: one hop (a code covers ``downsample`` samples and
        is emitted after its last one) + 0 samples of lookahead; chunks of n hops add n - 1.
        None for a non-causal model, which does not stream."""
        return self.config.downsample if self.config.causal else None

    @property
    def length_multiple(self) -> int:
        """Clips of any length that is a multiple of this are accepted (graph export keeps
        the length free)."""
        return self.config.downsample

    def example_input(self, batch: int) -> Tensor:
        """Zero clips (B, C, length) (graph export traces it; any length divisible by
        ``downsample`` is accepted)."""
        return torch.zeros(batch, self.config.in_channels, self.config.length)

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """Indices (B, t) (or (B, k, t): the first k <= L residual levels) -> signals
        (B, C, t · downsample)."""
        levels = self.quantizer.index_levels
        if indices.dim() != (3 if levels else 2):
            expected = f"(B, {levels}, t)" if levels else "(B, t)"
            raise ValueError(f"expected indices {expected}, got shape {tuple(indices.shape)}")
        return self.decode_quantized(self.quantizer.lookup(indices))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_indices(self.encode(x))

    @property
    def bits_per_second(self) -> float:
        """The code stream's bitrate: codes per second × levels × log2 K."""
        levels = max(1, self.quantizer.index_levels)
        return self.config.codes_per_second * levels * math.log2(self.quantizer.codebook_size)

    def _check_signal(self, x: Tensor) -> Tensor:
        c, d = self.config.in_channels, self.config.downsample
        if x.dim() == 2 and c == 1:
            x = x[:, None]  # (B, T) -> (B, 1, T)
        if x.dim() != 3 or x.shape[1] != c or x.shape[2] % d or x.shape[2] == 0:
            raise ValueError(
                f"expected signals (B, {c}, T) with T a positive multiple of {d}, got shape "
                f"{tuple(x.shape)}"
            )
        return x
