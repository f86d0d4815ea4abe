"""Low-dimensional code lookup (Yu et al. 2021, "Vector-quantized Image Modeling with Improved
VQGAN", sec. 3.2, "factorized codes"): project the encoder output D -> d, search a d-dimensional
codebook, project the chosen code back d -> D.

A small search space packs the codes densely, so fewer of them are stranded far from the data;
the projections are ordinary learned linear maps. Any quantizer of the family can sit inside.
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from vqvae.quantizers.base import Quantizer, QuantizerOutput


class LowDimQuantizer(Quantizer):
    """``inner`` (a quantizer of dimension d) searched in a learned d-dimensional projection.

    Example::

        q = LowDimQuantizer(64, EMAVectorQuantizer(512, 8))
        out = q(torch.randn(8, 64, 7, 7))  # quantized (8, 64, 7, 7); the search ran in 8 dims
    """

    def __init__(self, dim: int, inner: Quantizer) -> None:
        super().__init__()
        self.dim = dim
        self.inner = inner
        self.codebook_size = inner.codebook_size
        self.index_levels = inner.index_levels
        self.project_in = nn.Linear(dim, inner.dim)
        self.project_out = nn.Linear(inner.dim, dim)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_input(z)
        small = self.project_in(z.movedim(1, -1)).movedim(-1, 1)  # (B, d, *S)
        out = self.inner(small)
        return replace(out, quantized=self._expand(out.quantized))

    def lookup(self, indices: Tensor) -> Tensor:
        return self._expand(self.inner.lookup(indices))

    def export_indices(self, z: Tensor) -> Tensor:
        return self.inner.export_indices(self.project_in(z.movedim(1, -1)).movedim(-1, 1))

    def export_lookup(self, indices: Tensor) -> Tensor:
        return self._expand(self.inner.export_lookup(indices))

    def _expand(self, small: Tensor) -> Tensor:
        """(B, d, *S) -> (B, D, *S). The same op sequence in forward and lookup, so the index
        round trip is exact."""
        last = small.movedim(1, -1)  # (B, *S, d)
        flat = self.project_out(last.reshape(-1, last.shape[-1]))  # (N, D)
        return flat.reshape(*last.shape[:-1], self.dim).movedim(-1, 1)
