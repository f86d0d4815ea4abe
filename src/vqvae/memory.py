"""Will a model fit in memory? Asked before it is built, so that an absurd size (a codebook of
10¹² codes) is one line naming the size rather than an allocation traceback.

The model is first built on PyTorch's ``meta`` device: every parameter and buffer gets its
shape and dtype but no storage, so counting their bytes costs nothing whatever their size.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from vqvae.errors import ConfigError

# Training holds each parameter four times: the weights, their gradients and AdamW's two moments.
TRAINING_COPIES = 4
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def physical_memory() -> int | None:
    """Bytes of physical memory on this machine (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def training_bytes(build: Callable[[], nn.Module]) -> int:
    """Bytes the module ``build()`` returns needs to train: its parameters
    (``TRAINING_COPIES`` times) and its buffers, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = build()
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return TRAINING_COPIES * params + buffers


def check_fits(build: Callable[[], nn.Module], what: str, available: int | None = None) -> None:
    """Refuse (``ConfigError``) to train the module ``build()`` makes when its parameters,
    gradients, optimiser state and buffers alone exceed the physical memory (``available``)."""
    available = physical_memory() if available is None else available
    if available is None:
        return
    needed = training_bytes(build)
    if needed > available:
        raise ConfigError(
            f"{what}: needs about {format_bytes(needed)} to train (parameters, gradients, "
            f"optimiser state and buffers); this machine has {format_bytes(available)}"
        )


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    unit = 0
    while n >= 1024 and unit < len(_UNITS) - 1:
        n, unit = n / 1024, unit + 1
    return f"{n:.0f} {_UNITS[unit]}" if unit == 0 or n >= 100 else f"{n:.1f} {_UNITS[unit]}"
