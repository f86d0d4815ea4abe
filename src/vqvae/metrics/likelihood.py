"""Likelihood of discrete codes under a prior, in bits."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def nll_bits(logits: Tensor, targets: Tensor) -> Tensor:
    """Summed negative log-likelihood in bits. logits (B, K, *S), targets (B, *S) int64."""
    return F.cross_entropy(logits, targets, reduction="sum") / math.log(2)


def bits_per_dim(bits_per_code: float, codes_per_item: int, dims_per_item: int) -> float:
    """Bits per input dimension (e.g. per pixel) from bits per code."""
    return bits_per_code * codes_per_item / dims_per_item
