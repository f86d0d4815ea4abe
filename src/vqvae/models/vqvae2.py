"""Hierarchical VQ-VAE (VQ-VAE-2; Razavi et al. 2019, "Generating Diverse High-Fidelity Images
with VQ-VAE-2"): a coarse top code map and a fine bottom code map.

    x ──bottom encoder (÷downsample)──> h_b (B, hidden, hb, wb)
    h_b ──top encoder (÷top_downsample)──> z_e^top ──quantize──> z_q^top (B, Dt, ht, wt)
    z_q^top ──top decoder (×top_downsample)──> t_b (B, hidden, hb, wb)
    1×1(concat(h_b, t_b)) ──quantize──> z_q^bottom (B, Db, hb, wb)     (bottom sees the top)
    concat(z_q^bottom, upsample(z_q^top)) ──decoder (×downsample)──> x̂

Loss = reconstruction + both quantizers' codebook and commitment terms (paper eq. 1 per level).
``encode(x) -> (top, bottom)`` and ``decode_indices(top, bottom) -> x̂`` reproduce the eval-mode
forward pass exactly. The bottom prior is conditioned on the top codes (``GatedPixelCNN`` with
``cond_codebook_size``), the top prior on nothing (or a class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae import serialization
from vqvae.errors import ConfigError
from vqvae.nets import Decoder2d, Encoder2d
from vqvae.quantizers import QuantizerConfig, QuantizerOutput, build_quantizer


def _is_power_of_two(n: int) -> bool:
    return n >= 2 and not n & (n - 1)


@dataclass
class VQVAE2Config:
    kind: Literal["vqvae2"] = "vqvae2"
    in_channels: int = 1
    image_size: int = 28
    downsample: int = 2  # bottom grid = image_size / downsample
    top_downsample: int = 2  # top grid = bottom grid / top_downsample
    hidden: int = 128
    res_blocks: int = 2
    res_hidden: int = 32
    recon_loss: Literal["mse", "bce"] = "mse"
    data_variance: float = 1.0  # MSE is divided by it, as for the VQ-VAE
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)  # the bottom codes
    top_quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ConfigError(f"model.in_channels must be >= 1, got {self.in_channels}")
        for name in ("downsample", "top_downsample"):
            if not _is_power_of_two(getattr(self, name)):
                raise ConfigError(
                    f"model.{name} must be a power of two >= 2, got {getattr(self, name)}"
                )
        total = self.downsample * self.top_downsample
        if self.image_size < 1 or self.image_size % total:
            raise ConfigError(
                f"model.image_size {self.image_size} is not divisible by model.downsample × "
                f"model.top_downsample = {total}"
            )
        for name in ("hidden", "res_hidden"):
            if getattr(self, name) < 2:
                raise ConfigError(f"model.{name} must be >= 2, got {getattr(self, name)}")
        if self.res_blocks < 0:
            raise ConfigError(f"model.res_blocks must be >= 0, got {self.res_blocks}")
        if not self.data_variance > 0:
            raise ConfigError(f"model.data_variance must be > 0, got {self.data_variance}")

    @property
    def grid(self) -> tuple[int, int]:
        """The bottom code grid."""
        side = self.image_size // self.downsample
        return side, side

    @property
    def top_grid(self) -> tuple[int, int]:
        side = self.image_size // (self.downsample * self.top_downsample)
        return side, side


@dataclass
class VQVAE2Output:
    reconstruction: Tensor  # (B, C, H, W) in data space
    recon_loss: Tensor
    top: QuantizerOutput
    bottom: QuantizerOutput
    loss: Tensor


class VQVAE2(nn.Module):
    def __init__(self, config: VQVAE2Config) -> None:
        super().__init__()
        self.config = config
        c, hid = config, config.hidden
        res = (c.res_blocks, c.res_hidden)
        self.top_quantizer = build_quantizer(c.top_quantizer)
        self.quantizer = build_quantizer(c.quantizer)  # bottom
        dt, db = self.top_quantizer.dim, self.quantizer.dim
        for q, name in ((self.top_quantizer, "top_quantizer"), (self.quantizer, "quantizer")):
            if q.index_levels:
                raise ConfigError(f"model.{name}: VQ-VAE-2 needs one index map per level")
        self.bottom_encoder = Encoder2d(c.in_channels, hid, *res, hid, c.downsample)
        self.top_encoder = Encoder2d(hid, hid, *res, dt, c.top_downsample)
        self.top_decoder = Decoder2d(dt, hid, *res, hid, c.top_downsample)
        self.bottom_pre_quant = nn.Conv2d(2 * hid, db, 1)
        self.upsample_top = nn.ConvTranspose2d(
            dt, dt, 2 * c.top_downsample, stride=c.top_downsample, padding=c.top_downsample // 2
        )
        self.decoder = Decoder2d(db + dt, hid, *res, c.in_channels, c.downsample)

    # --- the forward pass -------------------------------------------------------------------
    def _quantize(self, x: Tensor) -> tuple[QuantizerOutput, QuantizerOutput]:
        h_b = self.bottom_encoder(x - 0.5)  # (B, hidden, hb, wb)
        top = self.top_quantizer(self.top_encoder(h_b))  # (B, Dt, ht, wt)
        t_b = self.top_decoder(top.quantized)  # (B, hidden, hb, wb)
        bottom = self.quantizer(self.bottom_pre_quant(torch.cat([h_b, t_b], 1)))  # (B, Db, hb, wb)
        return top, bottom

    def _decode(self, z_top: Tensor, z_bottom: Tensor) -> Tensor:
        """Quantized top (B, Dt, ht, wt) and bottom (B, Db, hb, wb) -> decoder output."""
        return self.decoder(torch.cat([z_bottom, self.upsample_top(z_top)], 1))

    def _to_data(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out) if self.config.recon_loss == "bce" else out + 0.5

    def _target(self, x: Tensor) -> Tensor:
        return (x > 0.5).to(x.dtype) if self.config.recon_loss == "bce" else x

    def forward(self, x: Tensor) -> VQVAE2Output:
        self._check_images(x)
        target = self._target(x)
        top, bottom = self._quantize(target)
        out = self._decode(top.quantized, bottom.quantized)
        if self.config.recon_loss == "bce":
            recon_loss = F.binary_cross_entropy_with_logits(out, target)
            scaled = recon_loss
        else:
            recon_loss = F.mse_loss(out + 0.5, target)
            scaled = recon_loss / self.config.data_variance
        loss = scaled + top.loss + bottom.loss
        return VQVAE2Output(self._to_data(out), recon_loss, top, bottom, loss)

    def training_losses(self, batch: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        """The loss, scalar metrics, and the bottom codebook's counts (codebook health)."""
        x = batch[0]
        out = self(x)
        with torch.no_grad():
            mse = F.mse_loss(out.reconstruction.clamp(0, 1), self._target(x))
        return {
            "loss": out.loss,
            "recon": out.recon_loss.detach(),
            "commitment": (out.top.commitment_loss + out.bottom.commitment_loss).detach(),
            "top_perplexity": out.top.perplexity.detach(),
            "psnr": -10 * torch.log10(mse.clamp_min(1e-10)),
            "code_counts": out.bottom.code_counts,
        }

    # --- the index level --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) in [0, 1] -> (top (B, ht, wt), bottom (B, hb, wb)) indices."""
        self._check_images(x)
        was_training = self.training
        self.eval()
        try:
            top, bottom = self._quantize(self._target(x))
            return top.indices, bottom.indices
        finally:
            self.train(was_training)

    @torch.no_grad()
    def decode_indices(self, top: Tensor, bottom: Tensor) -> Tensor:
        """Top (B, ht, wt) and bottom (B, hb, wb) indices -> images (B, C, H, W)."""
        if top.dim() != 3 or bottom.dim() != 3 or len(top) != len(bottom):
            raise ValueError(
                f"expected top (B, ht, wt) and bottom (B, hb, wb) indices, got shapes "
                f"{tuple(top.shape)} and {tuple(bottom.shape)}"
            )
        z_top = self.top_quantizer.lookup(top)
        z_bottom = self.quantizer.lookup(bottom)
        return self._to_data(self._decode(z_top, z_bottom))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_indices(*self.encode(x))

    @property
    def bits_per_image(self) -> float:
        """Capacity of both code maps: Σ_levels M·log2 K."""
        (ht, wt), (hb, wb) = self.config.top_grid, self.config.grid
        return ht * wt * math.log2(self.top_quantizer.codebook_size) + hb * wb * math.log2(
            self.quantizer.codebook_size
        )

    def _check_images(self, x: Tensor) -> None:
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"expected images (B, {c}, {s}, {s}), got shape {tuple(x.shape)}")

    # --- save / load ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        return serialization.save_module(self, self.config, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> VQVAE2:
        config = serialization.read_config(directory, cls.__name__, VQVAE2Config)
        model = serialization.load_weights(cls(config), directory)
        return model.to(map_location)
