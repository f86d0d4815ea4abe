"""The VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning").

x -> encoder -> z_e (B, D, h, w) -> nearest code -> z_q -> decoder -> x̂.
Loss = reconstruction + ||sg[z_e] - e||² + β·||z_e - sg[e]||² (eq. 3), no KL term.
The index level is first-class: ``encode(x) -> indices`` and ``decode_indices(indices) -> x̂``
reproduce the eval-mode forward pass exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from vqvae.models.image_config import ImageModelConfig
from vqvae.nets import Decoder2d, Encoder2d
from vqvae.nets.modes import eval_mode
from vqvae.quantizers import QuantizerConfig, QuantizerOutput, build_quantizer
from vqvae.serialization import Pretrained


@dataclass
class VQVAEConfig(ImageModelConfig):
    kind: Literal["vqvae"] = "vqvae"  # the model family (see vqvae.models.build_model)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)


@dataclass
class VQVAEOutput:
    reconstruction: Tensor  # (B, C, H, W) in data space ([0, 1])
    recon_loss: Tensor  # MSE (or BCE) per element, unnormalised
    quantizer: QuantizerOutput
    loss: Tensor  # the training objective


class VQVAE(Pretrained, nn.Module):
    config_class = VQVAEConfig

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        config.require_shape()
        self.config = config
        q = config.quantizer
        args = (config.width, config.res_blocks, config.res_hidden)
        self.encoder = Encoder2d(config.in_channels, *args, q.dim, config.downsample)
        self.quantizer = build_quantizer(q)
        self.decoder = Decoder2d(q.dim, *args, config.in_channels, config.downsample)

    # --- the forward pass -------------------------------------------------------------------
    def forward(self, x: Tensor) -> VQVAEOutput:
        c = self.config
        c.check_images(x)
        target = c.target(x)
        q = self.quantizer(self.encoder(target - 0.5))  # centre inputs around 0
        out = self.decoder(q.quantized)
        recon_loss, scaled = c.reconstruction_loss(out, target)
        return VQVAEOutput(c.to_images(out), recon_loss, q, scaled + q.loss)

    def training_losses(self, batch: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        """One batch's differentiable ``loss``, scalar metrics and the batch's code counts."""
        x = batch[0]
        out = self(x)
        q = out.quantizer
        psnr = self.config.batch_psnr(out.reconstruction, self.config.target(x), out.recon_loss)
        return {
            "loss": out.loss,
            "recon": out.recon_loss.detach(),
            "codebook": q.codebook_loss.detach(),
            "commitment": q.commitment_loss.detach(),
            "psnr": psnr,
            "code_counts": q.code_counts,
        }

    # --- the index level --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> code indices (B, h, w), or (B, L, h, w) for a
        residual quantizer (``quantizer.index_levels = L``: one map per level). Uses eval-mode
        behaviour."""
        with eval_mode(self):
            return self.quantizer(self.encoder_output(x)).indices

    def encoder_output(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> z_e (B, D, h, w), what the quantizer searches."""
        self.config.check_images(x)
        return self.encoder(self.config.target(x) - 0.5)  # centre inputs around 0

    def decode_quantized(self, quantized: Tensor) -> Tensor:
        """z_q (B, D, h, w) -> images (B, C, H, W) in data space (not clamped)."""
        return self.config.to_images(self.decoder(quantized))

    def example_input(self, batch: int) -> Tensor:
        """Zero images of the shape the model takes (graph export traces it)."""
        c, s = self.config.in_channels, self.config.image_size
        return torch.zeros(batch, c, s, s)

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices (B, h, w), or (B, k, h, w) for a residual quantizer (its first k <= L
        levels) -> images (B, C, H, W) in data space."""
        levels = self.quantizer.index_levels
        if indices.dim() != (4 if levels else 3):
            expected = f"(B, {levels}, h, w)" if levels else "(B, h, w)"
            raise ValueError(f"expected indices {expected}, got shape {tuple(indices.shape)}")
        return self.decode_quantized(self.quantizer.lookup(indices))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_indices(self.encode(x))

    @property
    def bits_per_image(self) -> float:
        """Capacity of the discrete code: M·log2 K bits for M codes (M·L·log2 K for L levels)."""
        h, w = self.config.grid
        levels = max(1, self.quantizer.index_levels)
        return h * w * levels * math.log2(self.quantizer.codebook_size)
