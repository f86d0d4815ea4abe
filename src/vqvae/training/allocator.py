"""Keep a training process's freed memory for reuse (glibc malloc settings).

PyTorch allocates a step's activations and gradients anew every step and frees them at its end.
With glibc's defaults, blocks above the mmap threshold (128 KiB, raised on the fly up to 32 MiB)
are mmap'ed and munmap'ed, and the heap is trimmed whenever 128 KiB lie free at its top, so
every step the kernel maps and zero-fills fresh pages again. Measured on the Sonnet-example
VQ-VAE (MNIST, batch 128, 2 threads): about 10,000 page faults and 20 ms of kernel time in a
90 ms step; with the settings below, under 100 faults and a 15% shorter step (the same for the
network with and without its quantizer). tcmalloc and jemalloc, which PyTorch's CPU tuning guide
recommends, do the same by design; this needs no extra library.

The setting is process-wide and only affects allocations made after it: memory freed at the
end of a step stays in the process (its peak resident size is what the step needs anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Largest mmap threshold glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2); bigger blocks
# (rare in a training step) are still mapped on demand.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 1 << 30  # return free memory at the heap's top only above 1 GiB


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds so freed blocks are reused, not returned to the
    kernel. Returns whether the settings took effect (False off glibc: macOS, Windows, musl).
    Idempotent."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
