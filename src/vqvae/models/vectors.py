"""The VQ-VAE for plain vectors (``model.kind = "mlp"``): tabular rows or embeddings.

x (B, F) -> standardise -> ``MLPEncoder`` -> M code vectors (B, D, M) -> nearest codes
-> ``MLPDecoder`` -> x̂ (B, F). Loss = MSE in standardised units + codebook + β·commitment.
Each vector becomes ``codes`` = M indices, M·log2 K bits. With M = 1 the codes are a learned
clustering of the data (a k-means-like partition shaped by the decoder).

The per-feature mean and standard deviation of the training data are buffers (saved with the
weights), set once by ``set_normalization`` before training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.errors import ConfigError
from vqvae.nets.mlp import MLPDecoder, MLPEncoder
from vqvae.nets.modes import eval_mode
from vqvae.quantizers import QuantizerConfig, QuantizerOutput, build_quantizer
from vqvae.serialization import Pretrained


def _default_quantizer() -> QuantizerConfig:
    return QuantizerConfig(codebook_size=64, dim=16)


@dataclass
class VectorVQVAEConfig:
    kind: Literal["mlp"] = "mlp"  # the model family (see vqvae.models.build_model)
    input_dim: int | None = None  # F: taken from the data by `vqvae train` unless set
    codes: int = 1  # M codes per vector
    hidden: int = 256
    layers: int = 2  # hidden layers in the encoder and in the decoder
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)

    def __post_init__(self) -> None:
        for name in ("input_dim", "codes", "hidden", "layers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class VectorVQVAEOutput:
    reconstruction: Tensor  # (B, F) in data units
    recon_loss: Tensor  # MSE in standardised units
    quantizer: QuantizerOutput
    loss: Tensor


class VectorVQVAE(Pretrained, nn.Module):
    config_class = VectorVQVAEConfig

    def __init__(self, config: VectorVQVAEConfig) -> None:
        super().__init__()
        if config.input_dim is None:
            raise ConfigError(
                "model.input_dim is taken from the data by `vqvae train`; set it to build a "
                "model without data"
            )
        self.config = config
        c, q = config, config.quantizer
        self.encoder = MLPEncoder(c.input_dim, c.hidden, c.layers, c.codes, q.dim)
        self.quantizer = build_quantizer(q)
        self.decoder = MLPDecoder(c.input_dim, c.hidden, c.layers, c.codes, q.dim)
        self.register_buffer("mean", torch.zeros(c.input_dim))
        self.register_buffer("std", torch.ones(c.input_dim))

    def set_normalization(self, data: np.ndarray | Tensor) -> None:
        """Standardise inputs with the mean and std of ``data`` (N, F) (constant features: 1)."""
        x = torch.as_tensor(np.asarray(data), dtype=torch.float64)
        self.mean.copy_(x.mean(0).float())
        std = x.std(0) if len(x) > 1 else torch.ones(x.shape[1], dtype=torch.float64)
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)).float())

    def forward(self, x: Tensor) -> VectorVQVAEOutput:
        z = self._standardize(x)
        q = self.quantizer(self.encoder(z))  # (B, D, M)
        out = self.decoder(q.quantized).float()  # (B, F) standardised; fp32 under autocast too
        recon_loss = F.mse_loss(out, z)
        return VectorVQVAEOutput(out * self.std + self.mean, recon_loss, q, recon_loss + q.loss)

    def training_losses(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        out = self(batch[0])
        q = out.quantizer
        return {
            "loss": out.loss,
            "recon": out.recon_loss.detach(),
            "commitment": q.commitment_loss.detach(),
            "code_counts": q.code_counts,
        }

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Vectors (B, F) -> indices (B, M) (or (B, L, M) for a residual quantizer)."""
        with eval_mode(self):
            return self.quantizer(self.encoder_output(x)).indices

    def encoder_output(self, x: Tensor) -> Tensor:
        """Vectors (B, F) -> z_e (B, D, M)."""
        return self.encoder(self._standardize(x))

    def decode_quantized(self, quantized: Tensor) -> Tensor:
        """z_q (B, D, M) -> vectors (B, F) in data units."""
        return self.decoder(quantized) * self.std + self.mean

    def example_input(self, batch: int) -> Tensor:
        return torch.zeros(batch, self.config.input_dim)

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """Indices (B, M) (or (B, L, M)) -> vectors (B, F) in data units."""
        levels = self.quantizer.index_levels
        want = (levels, self.config.codes) if levels else (self.config.codes,)
        if tuple(indices.shape[1:]) != want:
            raise ValueError(
                f"expected indices (B, {', '.join(map(str, want))}), got {tuple(indices.shape)}"
            )
        return self.decode_quantized(self.quantizer.lookup(indices))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_indices(self.encode(x))

    @property
    def bits_per_vector(self) -> float:
        levels = max(1, self.quantizer.index_levels)
        return self.config.codes * levels * math.log2(self.quantizer.codebook_size)

    def _standardize(self, x: Tensor) -> Tensor:
        f = self.config.input_dim
        if x.dim() != 2 or x.shape[1] != f:
            raise ValueError(f"expected vectors (B, {f}), got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std
