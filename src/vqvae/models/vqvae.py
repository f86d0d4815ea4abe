"""The VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning").

x -> encoder -> z_e (B, D, h, w) -> nearest code -> z_q -> decoder -> x̂.
Loss = reconstruction + ||sg[z_e] - e||² + β·||z_e - sg[e]||² (eq. 3), no KL term.
The index level is first-class: ``encode(x) -> indices`` and ``decode_indices(indices) -> x̂``
reproduce the eval-mode forward pass exactly.
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


@dataclass
class VQVAEConfig:
    kind: Literal["vqvae"] = "vqvae"  # the model family (see vqvae.models.build_model)
    in_channels: int = 1
    image_size: int = 28
    downsample: int = 4  # code grid = image_size / downsample
    hidden: int = 128
    res_blocks: int = 2
    res_hidden: int = 32
    recon_loss: Literal["mse", "bce"] = "mse"  # bce: inputs binarised at 0.5, decoder emits logits
    # MSE is divided by the training data's variance (as in the Sonnet example) so that the
    # reconstruction and commitment terms keep the balance the paper's β assumes.
    data_variance: float = 1.0
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ConfigError(f"model.in_channels must be >= 1, got {self.in_channels}")
        d = self.downsample
        if d < 2 or d & (d - 1):
            raise ConfigError(f"model.downsample must be a power of two >= 2, got {d}")
        if self.image_size < 1 or self.image_size % d:
            raise ConfigError(
                f"model.image_size {self.image_size} is not divisible by model.downsample {d}"
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
        side = self.image_size // self.downsample
        return side, side


@dataclass
class VQVAEOutput:
    reconstruction: Tensor  # (B, C, H, W) in data space ([0, 1])
    recon_loss: Tensor  # MSE (or BCE) per element, unnormalised
    quantizer: QuantizerOutput
    loss: Tensor  # the training objective


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        q = config.quantizer
        args = (config.hidden, config.res_blocks, config.res_hidden)
        self.encoder = Encoder2d(config.in_channels, *args, q.dim, config.downsample)
        self.quantizer = build_quantizer(q)
        self.decoder = Decoder2d(q.dim, *args, config.in_channels, config.downsample)

    # --- the forward pass -------------------------------------------------------------------
    def forward(self, x: Tensor) -> VQVAEOutput:
        self._check_images(x)
        target = (x > 0.5).to(x.dtype) if self.config.recon_loss == "bce" else x
        q = self.quantizer(self.encoder(target - 0.5))  # centre inputs around 0
        out = self.decoder(q.quantized)
        if self.config.recon_loss == "bce":
            recon_loss = F.binary_cross_entropy_with_logits(out, target)
            reconstruction = torch.sigmoid(out)
            scaled = recon_loss
        else:
            reconstruction = out + 0.5
            recon_loss = F.mse_loss(reconstruction, target)
            scaled = recon_loss / self.config.data_variance
        return VQVAEOutput(reconstruction, recon_loss, q, scaled + q.loss)

    def training_losses(self, batch: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        """One batch's differentiable ``loss``, scalar metrics and the batch's code counts."""
        x = batch[0]
        out = self(x)
        q = out.quantizer
        with torch.no_grad():
            target = (x > 0.5).to(x.dtype) if self.config.recon_loss == "bce" else x
            mse = F.mse_loss(out.reconstruction.clamp(0, 1), target)
        return {
            "loss": out.loss,
            "recon": out.recon_loss.detach(),
            "codebook": q.codebook_loss.detach(),
            "commitment": q.commitment_loss.detach(),
            "psnr": -10 * torch.log10(mse.clamp_min(1e-10)),
            "code_counts": q.code_counts,
        }

    # --- the index level --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> code indices (B, h, w), or (B, L, h, w) for a
        residual quantizer (``quantizer.index_levels = L``: one map per level). Uses eval-mode
        behaviour."""
        self._check_images(x)
        if self.config.recon_loss == "bce":
            x = (x > 0.5).to(x.dtype)
        was_training = self.training
        self.eval()
        try:
            return self.quantizer(self.encoder(x - 0.5)).indices
        finally:
            self.train(was_training)

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices (B, h, w), or (B, L, h, w) for a residual quantizer -> images (B, C, H, W)
        in data space."""
        levels = self.quantizer.index_levels
        if indices.dim() != (4 if levels else 3):
            expected = f"(B, {levels}, h, w)" if levels else "(B, h, w)"
            raise ValueError(f"expected indices {expected}, got shape {tuple(indices.shape)}")
        out = self.decoder(self.quantizer.lookup(indices))
        return torch.sigmoid(out) if self.config.recon_loss == "bce" else out + 0.5

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_indices(self.encode(x))

    @property
    def bits_per_image(self) -> float:
        """Capacity of the discrete code: M·log2 K bits for M codes (M·L·log2 K for L levels)."""
        h, w = self.config.grid
        levels = max(1, self.quantizer.index_levels)
        return h * w * levels * math.log2(self.quantizer.codebook_size)

    def _check_images(self, x: Tensor) -> None:
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"expected images (B, {c}, {s}, {s}), got shape {tuple(x.shape)}")

    # --- save / load ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        return serialization.save_module(self, self.config, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> VQVAE:
        config = serialization.read_config(directory, cls.__name__, VQVAEConfig)
        model = serialization.load_weights(cls(config), directory)
        return model.to(map_location)
