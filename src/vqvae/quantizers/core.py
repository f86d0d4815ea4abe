"""The one nearest-code routine every quantizer shares.

Squared Euclidean distances are expanded as ``||z||² - 2 z·e + ||e||²`` so the search is one matrix
product per chunk; ``||z||²`` is constant per row and does not change the argmin, so it is only
added when the distances themselves are asked for. Rows are processed in chunks so that at most
``max_elements`` distances (N_chunk × K) exist at once: memory stays bounded for any N and K.
"""

from __future__ import annotations

import torch
from torch import Tensor

# 2**24 float32 distances = 64 MiB per chunk: large enough that the matrix product dominates.
DEFAULT_MAX_ELEMENTS = 1 << 24


@torch.no_grad()
def nearest_code(
    z: Tensor, codebook: Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[Tensor, Tensor]:
    """Index of the nearest codebook row for every row of ``z``, and its squared distance.

    z: (N, D), codebook: (K, D) -> indices (N,) int64, squared distances (N,).

    Example: ``nearest_code(torch.randn(6, 4), torch.randn(10, 4))[0].shape == (6,)``.
    """
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: expected z (N, D) and codebook (K, D), got {tuple(z.shape)} "
            f"and {tuple(codebook.shape)}"
        )
    n, k = z.shape[0], codebook.shape[0]
    z = z.to(codebook.dtype)
    codes_sq = codebook.pow(2).sum(1)  # (K,)
    chunk = max(1, max_elements // max(k, 1))
    indices = torch.empty(n, dtype=torch.long, device=z.device)
    distances = torch.empty(n, dtype=codebook.dtype, device=z.device)
    for start in range(0, n, chunk):
        zc = z[start : start + chunk]  # (n_c, D)
        # ||e||² - 2 z·e in one fused call: (n_c, K)
        partial = torch.addmm(codes_sq, zc, codebook.t(), beta=1.0, alpha=-2.0)
        best, idx = partial.min(dim=1)
        indices[start : start + chunk] = idx
        distances[start : start + chunk] = (best + zc.pow(2).sum(1)).clamp_min_(0.0)
    return indices, distances
