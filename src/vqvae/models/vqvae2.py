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
from typing import Literal

import torch
from torch import Tensor, nn

from vqvae.errors import ConfigError
from vqvae.models.image_config import ImageModelConfig, is_power_of_two
from vqvae.nets import Decoder2d, Encoder2d
from vqvae.nets.modes import eval_mode
from vqvae.quantizers import QuantizerConfig, QuantizerOutput, build_quantizer
from vqvae.serialization import Pretrained


@dataclass
class VQVAE2Config(ImageModelConfig):
    kind: Literal["vqvae2"] = "vqvae2"
    downsample: int = 2  # bottom grid = image_size / downsample
    top_downsample: int = 2  # top grid = bottom grid / top_downsample
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)  # the bottom codes
    top_quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_power_of_two(self.top_downsample):
            raise ConfigError(
                f"model.top_downsample must be a power of two >= 2, got {self.top_downsample}"
            )
        total = self.downsample * self.top_downsample
        if self.image_size is not None and self.image_size % total:
            raise ConfigError(
                f"model.image_size {self.image_size} is not divisible by model.downsample × "
                f"model.top_downsample = {total}"
            )

    @property
    def top_grid(self) -> tuple[int, int]:
        self.require_shape()
        side = self.image_size // (self.downsample * self.top_downsample)
        return side, side


@dataclass
class VQVAE2Output:
    reconstruction: Tensor  # (B, C, H, W) in data space
    recon_loss: Tensor
    top: QuantizerOutput
    bottom: QuantizerOutput
    loss: Tensor


class VQVAE2(Pretrained, nn.Module):
    config_class = VQVAE2Config

    def __init__(self, config: VQVAE2Config) -> None:
        super().__init__()
        config.require_shape()
        self.config = config
        c, hid = config, config.width
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

    def forward(self, x: Tensor) -> VQVAE2Output:
        self.config.check_images(x)
        target = self.config.target(x)
        top, bottom = self._quantize(target)
        out = self._decode(top.quantized, bottom.quantized)
        recon_loss, scaled = self.config.reconstruction_loss(out, target)
        loss = scaled + top.loss + bottom.loss
        return VQVAE2Output(self.config.to_images(out), recon_loss, top, bottom, loss)

    def training_losses(self, batch: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        """The loss, scalar metrics, and the bottom codebook's counts (codebook health)."""
        x = batch[0]
        out = self(x)
        psnr = self.config.batch_psnr(out.reconstruction, self.config.target(x), out.recon_loss)
        return {
            "loss": out.loss,
            "recon": out.recon_loss.detach(),
            "commitment": (out.top.commitment_loss + out.bottom.commitment_loss).detach(),
            "top_perplexity": out.top.perplexity.detach(),
            "psnr": psnr,
            "code_counts": out.bottom.code_counts,
        }

    # --- the index level --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) in [0, 1] -> (top (B, ht, wt), bottom (B, hb, wb)) indices."""
        self.config.check_images(x)
        with eval_mode(self):
            top, bottom = self._quantize(self.config.target(x))
            return top.indices, bottom.indices

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
        return self.config.to_images(self._decode(z_top, z_bottom))

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
