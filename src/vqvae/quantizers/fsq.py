"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
Simple"): no codebook to learn or collapse. Project D -> d = len(levels), bound channel c to
(-1, 1) with tanh, cut that interval into ``levels[c]`` equal bins and snap to the bin's centre
(straight-through gradient), project back d -> D. The implicit codebook is the grid of
prod(levels) points; a point's index is its bin digits read in mixed radix.

We snap to bin centres of equal-width bins, so even and odd level counts are treated alike
(the paper rounds a scaled tanh to integers and needs an offset for even levels); the idea and
the recommended level sets are the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqvae.distributed import all_reduce_sum
from vqvae.errors import ConfigError
from vqvae.quantizers.base import Quantizer, QuantizerOutput, straight_through

# The paper's recommended level sets (sec. 4.1, table 1) for about 2^8 ... 2^16 codes.
RECOMMENDED_LEVELS: dict[int, tuple[int, ...]] = {
    8: (8, 6, 5),
    10: (8, 5, 5, 5),
    12: (7, 5, 5, 5, 5),
    14: (8, 8, 8, 6, 5),
    16: (8, 8, 8, 5, 5, 5),
}


def fsq_levels_for(codebook_size: int) -> tuple[int, ...] | None:
    """Levels whose grid has exactly ``codebook_size`` points: the paper's recommended set of
    that size, else for a power of two 2^n as many 8s as fit and one or two 4s (2^10 -> 8,8,4,4;
    2^13 -> 8,8,8,4,4), keeping every channel at >= 4 levels. None for any other size."""
    for levels in RECOMMENDED_LEVELS.values():
        if math.prod(levels) == codebook_size:
            return levels
    n = codebook_size.bit_length() - 1
    if codebook_size < 2 or 2**n != codebook_size:
        return None
    if n < 4:
        return (codebook_size,)
    fours = {0: 0, 1: 2, 2: 1}[n % 3]  # n = 3·eights + 2·fours
    return (8,) * ((n - 2 * fours) // 3) + (4,) * fours


class FSQ(Quantizer):
    """Finite scalar quantizer with per-channel ``levels``; ``codebook_size = prod(levels)``.

    Example::

        fsq = FSQ((8, 5, 5, 5), dim=64)   # 1000 grid points
        out = fsq(torch.randn(8, 64, 7, 7))  # indices (8, 7, 7) in [0, 1000)
    """

    def __init__(self, levels: Sequence[int], dim: int) -> None:
        super().__init__()
        levels = tuple(int(n) for n in levels)
        if not levels or min(levels) < 2:
            raise ConfigError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        if dim < 1:
            raise ConfigError(f"code dim must be at least 1, got {dim}")
        self.levels = levels
        self.dim = dim
        self.codebook_size = math.prod(levels)
        basis = [math.prod(levels[:c]) for c in range(len(levels))]  # mixed-radix place values
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), persistent=False)
        d = len(levels)
        same = dim == d
        self.project_in = nn.Identity() if same else nn.Linear(dim, d)
        self.project_out = nn.Identity() if same else nn.Linear(d, dim)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_input(z)
        flat = self.project_in(z.movedim(1, -1).reshape(-1, self.dim))  # (N, d)
        bounded = torch.tanh(flat)  # (N, d) in (-1, 1)
        digits = self._digits(bounded.detach())  # (N, d) in [0, L)
        grid = straight_through(bounded, self._grid_values(digits))  # value exactly the grid
        indices = (digits.long() * self._basis).sum(-1)  # (N,)
        counts = torch.bincount(indices, minlength=self.codebook_size)
        if self.training:
            counts = all_reduce_sum(counts)  # health is the same on every rank
        out_shape = (z.shape[0], *z.shape[2:], self.dim)
        zero = flat.new_zeros(())
        return QuantizerOutput(
            quantized=self.project_out(grid).reshape(out_shape).movedim(-1, 1),  # (B, D, *S)
            indices=indices.reshape(out_shape[:-1]),  # (B, *S)
            codebook_loss=zero,
            commitment_loss=zero,
            code_counts=counts,
        )

    def _digits(self, bounded: Tensor) -> Tensor:
        """Values in (-1, 1) (N, d) -> the bin of each channel (N, d): L equal bins over
        (-1, 1), whole numbers in [0, L) as floats; the clamp catches tanh(x) == 1.0 exactly."""
        digits = torch.floor((bounded + 1) * (self._levels / 2))
        return torch.minimum(digits.clamp_min(0), self._levels - 1)

    def export_indices(self, z: Tensor) -> Tensor:
        flat = self.project_in(z.movedim(1, -1).reshape(-1, self.dim))  # (N, d)
        indices = (self._digits(torch.tanh(flat)).long() * self._basis).sum(-1)  # (N,)
        return indices.reshape(z.shape[0], *z.shape[2:])  # (B, *S)

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, *S) int -> (B, D, *S): index -> bin digits -> grid point -> project out."""
        self._check_indices(indices)
        return self.export_lookup(indices)

    def export_lookup(self, indices: Tensor) -> Tensor:
        flat = indices.long().reshape(-1, 1)  # (N, 1)
        digits = (flat // self._basis) % self._levels.long()  # (N, d)
        grid = self._grid_values(digits.to(self._levels.dtype))
        return self.project_out(grid).reshape(*indices.shape, self.dim).movedim(-1, 1)

    def grid_points(self) -> Tensor:
        """(K, d): every grid point in index order (the implicit codebook before projecting)."""
        return self._grid_values(
            (
                (
                    torch.arange(self.codebook_size, device=self._basis.device)[:, None]
                    // self._basis
                )
                % self._levels.long()
            ).to(self._levels.dtype)
        )

    def _grid_values(self, digits: Tensor) -> Tensor:
        """Bin digits (N, d) -> bin centres (2·digit + 1) / L - 1, in (-1, 1)."""
        return (2 * digits + 1) / self._levels - 1
