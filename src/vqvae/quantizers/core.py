"""The one nearest-code routine every quantizer shares.

Squared Euclidean distances are expanded as ``||z||² - 2 z·e + ||e||²`` so the search is one matrix
product per chunk; ``||z||²`` is constant per row and does not change the argmin, so it is only
added when the distances themselves are asked for. Rows are processed in chunks so that at most
``max(max_elements, MIN_ROWS·K)`` distances (N_chunk × K) exist at once: memory stays bounded for
any N and K (16 MiB per chunk by default; 64 MiB at K = 65,536).

On CPU (float32) the search runs in the fused kernel of ``native`` wherever this machine can build
it: product and row minimum in one pass, no N×K matrix at all. Otherwise (and for float64 or
CUDA) it runs here. On CPU (float32) the product is then a 1×1 convolution of the rows, seen as
one channels-last image of N pixels, with the codes as filters and ||e||² as bias: oneDNN's
convolution kernels are built for the CPU they run on, and measured here (AMD EPYC, 2 threads) it
is 1.3-2.2× faster than the BLAS matrix product of the same numbers (``torch.addmm``: MKL), bit
for bit the same at D = 64. Elsewhere (CUDA, float64) it is ``torch.addmm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.quantizers import native

# Row minimum in groups of this many codes (see _row_min); used when it divides K.
GROUP = 64

# 2**22 float32 distances = 16 MiB per chunk, and never fewer than 256 rows (a product of fewer
# rows runs far below the machine's speed). Measured on 2 cores, training-mode forward+backward
# (benchmarks/quantizer_speed.py shapes): against 2**20 with no row minimum, 1.15x faster at
# 32,768 × 64, K = 1024, 1.75x at 65,536 × 64, K = 8192, 1.13x at 65,536 × 256, K = 16,384, the
# same at 2,048 × 64, K = 512; 2**24 (64 MiB) was slower.
DEFAULT_MAX_ELEMENTS = 1 << 22
MIN_ROWS = 256


@torch.no_grad()
def nearest_code(
    z: Tensor, codebook: Tensor, *, max_elements: int | None = None
) -> tuple[Tensor, Tensor]:
    """Index of the nearest codebook row for every row of ``z``, and its squared distance.

    z: (N, D), codebook: (K, D) -> indices (N,) int64, squared distances (N,).

    Example: ``nearest_code(torch.randn(6, 4), torch.randn(10, 4))[0].shape == (6,)``.
    """
    indices, distances = _search(z, codebook, max_elements, with_distances=True)
    return indices, distances


@torch.no_grad()
def nearest_index(z: Tensor, codebook: Tensor, *, max_elements: int | None = None) -> Tensor:
    """``nearest_code(z, codebook)[0]`` without computing the distances (the training path)."""
    return _search(z, codebook, max_elements, with_distances=False)[0]


def _search(
    z: Tensor, codebook: Tensor, max_elements: int | None, with_distances: bool
) -> tuple[Tensor, Tensor | None]:
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: expected z (N, D) and codebook (K, D), got {tuple(z.shape)} "
            f"and {tuple(codebook.shape)}"
        )
    n, k = z.shape[0], codebook.shape[0]
    z = z.to(codebook.dtype)
    fused = native.search(z, codebook)
    if fused is not None:
        indices, best = fused
        return indices, _add_row_norms(best, z) if with_distances else None
    scores = _Scores(codebook)
    max_elements = DEFAULT_MAX_ELEMENTS if max_elements is None else max_elements
    chunk = max(MIN_ROWS, max_elements // max(k, 1))
    if n <= chunk:  # one chunk (every training batch of a usual size)
        best, indices = _row_min(scores(z))
        return indices, _add_row_norms(best, z) if with_distances else None
    indices = torch.empty(n, dtype=torch.long, device=z.device)
    distances = torch.empty(n, dtype=codebook.dtype, device=z.device) if with_distances else None
    for start in range(0, n, chunk):
        zc = z[start : start + chunk]  # (n_c, D)
        best, idx = _row_min(scores(zc))
        indices[start : start + chunk] = idx
        if distances is not None:
            distances[start : start + chunk] = _add_row_norms(best, zc)
    return indices, distances


def nearest_index_graph(z: Tensor, codebook: Tensor) -> Tensor:
    """``nearest_index`` written as plain tensor operations, for graph export (ONNX): one matrix
    product and an argmin, which every exporter can express (``torch.cdist``, the fused kernel
    and the chunked loop cannot be exported). z (N, D), codebook (K, D) -> indices (N,) int64.

    The score of code e is ``||e||² - 2 z·e``: the squared distance ``||z||² - 2 z·e + ||e||²``
    less ``||z||²``, which is the same for every code of a row, so it cannot change the argmin;
    adding it would only round the scores to the precision of ``||z||²`` and make close codes
    tie. Ties: ``argmin`` (ONNX ``ArgMin`` with ``select_last_index = 0``) takes the first,
    lowest index, as ``nearest_code`` does, so exact ties (duplicate codes) resolve the same
    way. Two codes whose squared distances differ by less than the float32 rounding of the
    score terms (about 1e-7 of ``||z||² + ||e||²``) may resolve differently from
    ``nearest_code``, whose sums run in another order: either is a nearest code to float32
    precision. ``benchmarks/onnx_parity.py`` counts such cases on real data.
    """
    codes_sq = (codebook * codebook).sum(1)  # (K,) ||e||²
    scores = codes_sq - 2.0 * torch.matmul(z, codebook.t())  # (N, K)
    return scores.argmin(dim=1)


class _Scores:
    """``scores(z)``: z (n, D) -> ||e||² - 2 z·e (n, K), contiguous, for one codebook (K, D)."""

    def __init__(self, codebook: Tensor) -> None:
        self.codebook = codebook
        self.codes_sq = torch.linalg.vecdot(codebook, codebook)  # (K,) ||e||²
        self.as_conv = (
            codebook.device.type == "cpu"
            and codebook.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled  # off: convolutions fall back to a slow kernel
        )
        if self.as_conv:  # K filters of D channels, 1×1
            self.filters = (codebook * -2.0).reshape(*codebook.shape, 1, 1)

    def __call__(self, z: Tensor) -> Tensor:
        n, d = z.shape
        if not self.as_conv or n == 0:
            return torch.addmm(self.codes_sq, z, self.codebook.t(), alpha=-2.0)
        # (n, D) rows = one channels-last image (1, D, n, 1); its output (1, K, n, 1) is laid
        # out as (n, K) rows
        image = z.contiguous().reshape(1, n, 1, d).permute(0, 3, 1, 2)
        out = F.conv2d(image, self.filters, self.codes_sq)  # (1, K, n, 1), channels-last
        return out.permute(0, 2, 3, 1).reshape(n, -1)


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
    return best, torch.add(inside, group, alpha=GROUP)
