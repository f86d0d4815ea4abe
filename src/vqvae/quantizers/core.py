"""The one nearest-code routine every quantizer shares.

Squared Euclidean distances are expanded as ``||z||² - 2 z·e + ||e||²`` so the search is one matrix
product per chunk; ``||z||²`` is constant per row and does not change the argmin, so it is only
added when the distances themselves are asked for. Rows are processed in chunks so that at most
``max_elements`` distances (N_chunk × K) exist at once: memory stays bounded for any N and K.
One buffer serves every chunk, and it is small enough to stay in cache between the product
that writes it and the row-wise minimum that reads it: chunked this way the search is faster
than the bare N×K product written to memory in one piece (benchmarks/quantizer_speed.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Row minimum in groups of this many codes (see _row_min); used when it divides K.
GROUP = 64

# 2**20 float32 distances = 4 MiB per chunk. Measured on 2 cores (16,384 × 64 vs K = 1024 and
# 16,384 × 256 vs K = 4096): 2**24 was 1.3-1.6x slower (a fresh 64 MiB allocation per chunk,
# written and read back from memory), 2**18 no faster at D = 64 and slower at D = 256.
DEFAULT_MAX_ELEMENTS = 1 << 20


@torch.no_grad()
def nearest_code(
    z: Tensor, codebook: Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[Tensor, Tensor]:
    """Index of the nearest codebook row for every row of ``z``, and its squared distance.

    z: (N, D), codebook: (K, D) -> indices (N,) int64, squared distances (N,).

    Example: ``nearest_code(torch.randn(6, 4), torch.randn(10, 4))[0].shape == (6,)``.
    """
    indices, distances = _search(z, codebook, max_elements, with_distances=True)
    return indices, distances


@torch.no_grad()
def nearest_index(
    z: Tensor, codebook: Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> Tensor:
    """``nearest_code(z, codebook)[0]`` without computing the distances (the training path)."""
    return _search(z, codebook, max_elements, with_distances=False)[0]


def _search(
    z: Tensor, codebook: Tensor, max_elements: int, with_distances: bool
) -> tuple[Tensor, Tensor | None]:
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: expected z (N, D) and codebook (K, D), got {tuple(z.shape)} "
            f"and {tuple(codebook.shape)}"
        )
    n, k = z.shape[0], codebook.shape[0]
    z = z.to(codebook.dtype)
    codes_sq = codebook.pow(2).sum(1)  # (K,)
    chunk = max(1, max_elements // max(k, 1))
    if n <= chunk:  # one chunk (every training batch of a usual size): no buffers to fill
        # ||e||² - 2 z·e in one fused call: (N, K)
        best, indices = _row_min(torch.addmm(codes_sq, z, codebook.t(), alpha=-2.0))
        return indices, _add_row_norms(best, z) if with_distances else None
    indices = torch.empty(n, dtype=torch.long, device=z.device)
    distances = torch.empty(n, dtype=codebook.dtype, device=z.device) if with_distances else None
    buffer = torch.empty(chunk, k, dtype=codebook.dtype, device=z.device)
    for start in range(0, n, chunk):
        zc = z[start : start + chunk]  # (n_c, D)
        partial = buffer[: zc.shape[0]]
        torch.addmm(codes_sq, zc, codebook.t(), beta=1.0, alpha=-2.0, out=partial)
        best, idx = _row_min(partial)
        indices[start : start + chunk] = idx
        if distances is not None:
            distances[start : start + chunk] = _add_row_norms(best, zc)
    return indices, distances


def _add_row_norms(best: Tensor, z: Tensor) -> Tensor:
    """min_e (||e||² - 2 z·e) + ||z||² = the squared distance to the nearest code (>= 0)."""
    return (best + z.pow(2).sum(1)).clamp_min_(0.0)


def _row_min(distances: Tensor) -> tuple[Tensor, Tensor]:
    """``distances.min(dim=1)`` (values and first index of the minimum), 2-4x faster on CPU.

    A min with its index is a slow scalar loop per row, while a min of values alone is
    vectorised, so: the minimum of every group of ``GROUP`` codes (values only), the first
    group holding the row's minimum (an index over K / GROUP values), then the index inside that
    group (over GROUP values). The first group with the minimum and its first position in it is
    the first position overall, so ties resolve exactly as ``min`` resolves them.
    """
    n, k = distances.shape
    if k % GROUP or k < 4 * GROUP:
        return distances.min(dim=1)
    groups = distances.view(n, k // GROUP, GROUP)
    best, group = groups.amin(dim=2).min(dim=1)  # (n,), (n,)
    inside = groups[torch.arange(n, device=distances.device), group].argmin(dim=1)  # (n,)
    return best, group * GROUP + inside
