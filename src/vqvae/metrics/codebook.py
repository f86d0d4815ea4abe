"""Codebook health: usage, perplexity and dead codes over a whole pass or a window of steps.

Per-batch perplexity depends on the batch size (a batch of 64 vectors can use at most 64 codes),
so health is always measured on histograms accumulated over many batches.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor


def codebook_stats(counts: Tensor, levels: int = 1) -> dict[str, float]:
    """From a histogram of code assignments (K,): usage fraction, perplexity, dead codes.

    For a residual quantizer pass the levels' histograms side by side, (L·K,) or (L, K), with
    ``levels = L``: the totals then count (level, code) pairs (usage = the mean of the levels'
    usage, dead codes = their sum, perplexity = that of the pairs, at most L·K), and
    ``level{l}_codebook_usage``, ``level{l}_perplexity``, ``level{l}_dead_codes`` are added.
    """
    stats = _stats(counts.double().flatten())
    if levels > 1:
        for l, row in enumerate(counts.double().reshape(levels, -1)):
            stats.update({f"level{l}_{k}": v for k, v in _stats(row).items()})
    return stats


def _stats(counts: Tensor) -> dict[str, float]:
    k = counts.numel()
    used = int((counts > 0).sum())
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()
    return {
        "codebook_usage": used / k,
        "perplexity": float(torch.exp(entropy)),
        "dead_codes": k - used,
    }


def code_histogram(indices: Tensor, codebook_size: int, levels: int = 0) -> Tensor:
    """Histogram (K,) float64 of an index map (B, *S); for ``levels = L > 0`` the map is
    (B, L, *S) and the result holds the levels' histograms side by side, (L·K,)."""
    indices = indices.long()
    if levels:
        offset = torch.arange(levels, device=indices.device) * codebook_size  # (L,)
        indices = indices + offset.reshape(1, levels, *([1] * (indices.dim() - 2)))
    n = max(1, levels) * codebook_size
    return torch.bincount(indices.flatten(), minlength=n).double().cpu()


class CodebookHealth:
    """A sliding window of code histograms, e.g. the last epoch of training steps."""

    def __init__(self, codebook_size: int, window: int) -> None:
        self.codebook_size = codebook_size
        self._window: deque[Tensor] = deque(maxlen=max(1, window))
        self._total = torch.zeros(codebook_size, dtype=torch.float64)

    def update(self, counts: Tensor) -> None:
        counts = counts.detach().to("cpu", torch.float64)
        if len(self._window) == self._window.maxlen:
            self._total -= self._window[0]
        self._window.append(counts)
        self._total += counts

    @property
    def counts(self) -> Tensor:
        return self._total.clamp_min(0)

    def stats(self) -> dict[str, float]:
        return codebook_stats(self.counts)

    def state_dict(self) -> Tensor:
        """The histograms in the window, oldest first: (steps, K) float64 (for checkpoints)."""
        if not self._window:
            return torch.zeros(0, self.codebook_size, dtype=torch.float64)
        return torch.stack(list(self._window))

    def load_state_dict(self, window: Tensor) -> None:
        self._window.clear()
        self._total = torch.zeros(self.codebook_size, dtype=torch.float64)
        for counts in window:
            self.update(counts)
