"""Residual vector quantization (Zeghidour et al. 2021, "SoundStream", sec. 3.3, algorithm 1;
Lee et al. 2022, "Autoregressive Image Generation using Residual Quantization"): level 1
quantizes z, level l quantizes what levels 1..l-1 left over, and z_q is the sum of the levels'
codes. L levels of K codes describe K^L points with L·K vectors.

Index maps are (B, L, *S): ``indices[:, l]`` is level l's map. ``lookup`` of such a map sums the
levels' codes in level order, exactly as ``forward`` did.

Fewer levels: each level searches what the levels before it left, so the first k rows of an
L-level index map are the k-level encoding, and ``lookup`` of a (B, k, *S) map (1 <= k <= L)
sums the first k levels' codes. A model trained with quantizer dropout (``quantizer_dropout``)
decodes well from any such prefix, so one model serves k bitrates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqvae.distributed import broadcast, world_size
from vqvae.errors import ConfigError
from vqvae.quantizers.base import ESTIMATORS, Quantizer, QuantizerOutput, quantize
from vqvae.quantizers.vq import CodebookQuantizer


class ResidualVectorQuantizer(Quantizer):
    """A stack of codebook quantizers on successive residuals.

    Each level runs its own search and codebook statistics (EMA, k-means init, dead-code
    reset) on the detached residual it is given. The losses and the gradient estimator apply
    once, to the sum: commitment β·||z - sg[Σ_l e_l]||², and the estimator (straight-through or
    rotation trick) carries the gradient from the sum back to z.

    Quantizer dropout (``dropout`` = p > 0; Zeghidour et al. 2021, "SoundStream", sec. 3.3,
    "quantizer dropout"): with probability p a training step uses only the first n levels, n
    drawn uniformly from 1..L, else all L (p = 1 is SoundStream's scheme; Kumar et al. 2023,
    "High-Fidelity Audio Compression with Improved RVQGAN", sec. 3.3, keep the full depth in
    half the steps, p = 0.5, so that full-depth quality barely drops). z_q and the losses are
    those of the n levels; the unused levels see nothing that step (no search, no EMA, no usage
    count: their rows of ``code_counts`` are zero) and ``indices`` holds only the n maps. One
    n per step, the same on every rank (rank 0's draw, from torch's global generator, which the
    training loop seeds and checkpoints). Eval mode always uses all L levels.

    Example::

        rvq = ResidualVectorQuantizer([EMAVectorQuantizer(512, 64) for _ in range(2)])
        out = rvq(torch.randn(8, 64, 7, 7))  # indices (8, 2, 7, 7), code_counts (2, 512)
        rvq.lookup(out.indices[:, :1])  # (8, 64, 7, 7): level 1's codes alone
    """

    def __init__(
        self,
        levels: Sequence[CodebookQuantizer],
        *,
        beta: float = 0.25,
        gradient: str = "ste",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not levels:
            raise ConfigError("a residual quantizer needs at least one level")
        sizes = {(q.codebook_size, q.dim) for q in levels}
        if len(sizes) != 1:
            raise ConfigError(f"residual levels must share codebook size and dim, got {sizes}")
        if gradient not in ESTIMATORS:
            raise ConfigError(f"gradient must be one of {sorted(ESTIMATORS)}, got {gradient!r}")
        if not 0 <= dropout <= 1:
            raise ConfigError(f"quantizer dropout must be in [0, 1], got {dropout}")
        self.levels = nn.ModuleList(levels)
        self.codebook_size, self.dim = sizes.pop()
        self.index_levels = len(levels)
        self.beta = beta
        self.gradient = gradient
        self.dropout = dropout

    def levels_this_step(self, device: torch.device | str = "cpu") -> int:
        """How many levels a forward pass uses: L in eval mode or without dropout; in training,
        with probability ``dropout`` n ~ U{1..L} (rank 0's draw), else L."""
        if not self.training or not self.dropout:
            return self.index_levels
        n = self.index_levels
        if float(torch.rand(())) < self.dropout:
            n = int(torch.randint(1, self.index_levels + 1, ()))
        if world_size() > 1:  # every rank must run the same levels (their statistics sync)
            n = int(broadcast(torch.tensor(n, device=device)))
        return n

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_input(z)
        flat = z.movedim(1, -1).reshape(-1, self.dim)  # (N, D)
        residual = flat.detach()
        total = torch.zeros_like(residual)  # (N, D), Σ of the levels' codes so far
        indices, codebook_loss = [], flat.new_zeros(())
        counts = [None] * self.index_levels  # a level this step skips counts nothing
        for l, level in enumerate(self.levels[: self.levels_this_step(z.device)]):
            out = level(residual)  # a (N, D) input is a batch of N vectors: indices (N,)
            step = out.quantized.detach()  # exactly the level's codes
            total = total + step
            residual = residual - step
            indices.append(out.indices)
            counts[l] = out.code_counts
            codebook_loss = codebook_loss + out.codebook_loss
        counts = [torch.zeros_like(counts[0]) if c is None else c for c in counts]
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
        """(B, k, *S) int, 1 <= k <= L -> (B, D, *S): the sum of the first k levels' codes
        (k = L: every level's, what ``forward`` returned in eval mode)."""
        if indices.dim() < 2 or not 1 <= indices.shape[1] <= self.index_levels:
            raise ValueError(
                f"expected indices (B, k, ...) with one map for each of the first k <= "
                f"{self.index_levels} residual levels, got {tuple(indices.shape)}"
            )
        self._check_indices(indices)
        return self.export_lookup(indices)

    def export_lookup(self, indices: Tensor) -> Tensor:
        per_level = indices.movedim(1, -1)  # (B, *S, k)
        flat = per_level.reshape(-1, per_level.shape[-1])  # (N, k)
        total = torch.zeros(flat.shape[0], self.dim, device=indices.device)
        total = total.to(self.levels[0].codebook_vectors().dtype)
        for l in range(flat.shape[1]):  # in level order, as forward summed them
            total = total + self.levels[l].export_lookup(flat[:, l])  # (N,) -> (N, D)
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
