"""Residual vector quantization (Zeghidour et al. 2021, "SoundStream", sec. 3.3, algorithm 1;
Lee et al. 2022, "Autoregressive Image Generation using Residual Quantization"): level 1
quantizes z, level l quantizes what levels 1..l-1 left over, and z_q is the sum of the levels'
codes. L levels of K codes describe K^L points with L·K vectors.

Index maps are (B, L, *S): ``indices[:, l]`` is level l's map. ``lookup`` of such a map sums the
levels' codes in level order, exactly as ``forward`` did.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqvae.errors import ConfigError
from vqvae.quantizers.base import ESTIMATORS, Quantizer, QuantizerOutput, quantize
from vqvae.quantizers.vq import CodebookQuantizer


class ResidualVectorQuantizer(Quantizer):
    """A stack of codebook quantizers on successive residuals.

    Each level runs its own search and codebook statistics (EMA, k-means init, dead-code
    reset) on the detached residual it is given. The losses and the gradient estimator apply
    once, to the sum: commitment β·||z - sg[Σ_l e_l]||², and the estimator (straight-through or
    rotation trick) carries the gradient from the sum back to z.

    Example::

        rvq = ResidualVectorQuantizer([EMAVectorQuantizer(512, 64) for _ in range(2)])
        out = rvq(torch.randn(8, 64, 7, 7))  # indices (8, 2, 7, 7), code_counts (2, 512)
    """

    def __init__(
        self, levels: Sequence[CodebookQuantizer], *, beta: float = 0.25, gradient: str = "ste"
    ) -> None:
        super().__init__()
        if not levels:
            raise ConfigError("a residual quantizer needs at least one level")
        sizes = {(q.codebook_size, q.dim) for q in levels}
        if len(sizes) != 1:
            raise ConfigError(f"residual levels must share codebook size and dim, got {sizes}")
        if gradient not in ESTIMATORS:
            raise ConfigError(f"gradient must be one of {sorted(ESTIMATORS)}, got {gradient!r}")
        self.levels = nn.ModuleList(levels)
        self.codebook_size, self.dim = sizes.pop()
        self.index_levels = len(levels)
        self.beta = beta
        self.gradient = gradient

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_input(z)
        flat = z.movedim(1, -1).reshape(-1, self.dim)  # (N, D)
        residual = flat.detach()
        total = torch.zeros_like(residual)  # (N, D), Σ of the levels' codes so far
        indices, counts, codebook_loss = [], [], flat.new_zeros(())
        for level in self.levels:
            out = level(residual)  # a (N, D) input is a batch of N vectors: indices (N,)
            step = out.quantized.detach()  # exactly the level's codes
            total = total + step
            residual = residual - step
            indices.append(out.indices)
            counts.append(out.code_counts)
            codebook_loss = codebook_loss + out.codebook_loss
        # (N, D), value exactly Σ codes; β·||z - sg[Σ codes]||²
        quantized, commitment_loss = quantize(flat, total, self.beta, self.gradient)
        out_shape = (z.shape[0], *z.shape[2:], self.dim)
        counts = torch.stack(counts)  # (L, K)
        return QuantizerOutput(
            quantized=quantized.reshape(out_shape).movedim(-1, 1),  # (B, D, *S)
            # (N, L) -> (B, *S, L) -> (B, L, *S)
            indices=torch.stack(indices, 1).reshape(*out_shape[:-1], -1).movedim(-1, 1),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            code_counts=counts,
        )

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, L, *S) int -> (B, D, *S): the sum of every level's code."""
        if indices.dim() < 2 or indices.shape[1] != self.index_levels:
            raise ValueError(
                f"expected indices (B, {self.index_levels}, ...) with one map per residual "
                f"level, got {tuple(indices.shape)}"
            )
        self._check_indices(indices)
        return self.export_lookup(indices)

    def export_lookup(self, indices: Tensor) -> Tensor:
        per_level = indices.movedim(1, -1)  # (B, *S, L)
        flat = per_level.reshape(-1, self.index_levels)  # (N, L)
        total = torch.zeros(flat.shape[0], self.dim, device=indices.device)
        total = total.to(self.levels[0].codebook_vectors().dtype)
        for l, level in enumerate(self.levels):
            total = total + level.export_lookup(flat[:, l])  # (N,) -> (N, D)
        return total.reshape(*per_level.shape[:-1], self.dim).movedim(-1, 1)

    def export_indices(self, z: Tensor) -> Tensor:
        """Each level searches what the levels before it left: (B, D, *S) -> (B, L, *S)."""
        residual = z.movedim(1, -1).reshape(-1, self.dim)  # (N, D)
        indices = []
        for level in self.levels:
            idx = level.export_indices(residual)  # a (N, D) input: indices (N,)
            residual = residual - level.export_lookup(idx)
            indices.append(idx)
        out_shape = (z.shape[0], *z.shape[2:], self.index_levels)
        return torch.stack(indices, 1).reshape(out_shape).movedim(-1, 1)  # (B, L, *S)
