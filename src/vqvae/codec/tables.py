"""The one function that turns a prior's logits into the entropy coder's frequency tables.

Encoder and decoder must feed the range coder the very same table at every position, or the
decoder reads garbage. Floating-point logits are not reproducible to the last bit: measured on
this project's MNIST PixelCNN (64 channels, 12 layers), float32 logits of the same codes
differed by up to 2.3e-4 between a batch of 64 and a batch of 1, and the full forward pass and
the cached incremental decoder disagree by as much. So the codec

1. runs the prior in float64 (the same disagreements shrink to below 1e-12: 0 for the PixelCNN's
   cached decoder, 1.8e-14 for the Transformer's, across batch sizes 1, 7, 64 and 1 or 2
   threads), through the cached decoder on both sides, and
2. rounds each logit to a multiple of ``LOGIT_STEP`` (1/16 nat) before anything else, so only a
   float64 difference that straddles a rounding boundary can change a table — with differences
   of 1e-12 and a step of 0.0625, about one logit in 10^10 — and
3. maps the rounded logits to integers through a fixed table of ``TOP · exp(-n · LOGIT_STEP)``,
   at least 1 (every code stays decodable).

A mismatch is therefore not impossible by construction, only vanishingly rare; the archive
records a checksum of the codes, so if it ever happens the decoder reports it instead of
writing wrong images. The rounding costs at most about 2e-4 bits per code (the KL divergence of
a relative error within ±1/32 nat), the floor of 1 at most K / 2^20 of the mass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

LOGIT_STEP = 1.0 / 16  # nats; a power of two, so logits / LOGIT_STEP is exact
TOP = 2**20  # the frequency of the most likely code
# _FREQUENCY[n] = the frequency of a code whose rounded logit is n steps below the largest.
_FREQUENCY = np.maximum(1.0, np.round(TOP * np.exp(-LOGIT_STEP * np.arange(256))))
_FREQUENCY = _FREQUENCY[: int(np.argmax(_FREQUENCY == 1.0)) + 1]  # beyond: all 1


def frequencies(logits: Tensor) -> np.ndarray:
    """float64 logits (B, K) -> integer frequency tables (B, K) as float64 (what the range
    coder's categorical model takes), each entry in [1, TOP], TOP at the largest logit."""
    if logits.dtype != torch.float64:
        raise TypeError(f"frequency tables are computed from float64 logits, got {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the prior gave non-finite logits")
    steps = torch.round(logits / LOGIT_STEP)  # (B, K) whole steps
    below = steps.amax(dim=1, keepdim=True) - steps  # >= 0
    below = below.clamp(max=len(_FREQUENCY) - 1).to(torch.int64)
    return _FREQUENCY[below.numpy()]
