"""The quantizers' hot loops in C++ (``kernels.cpp``), float32 on CPU, compiled for this machine
on first use: the fused nearest-code search, the gather of the chosen codes, and the EMA
codebook update.

``search(z, codebook)`` runs the product and the row minimum in one pass, tile by tile in
registers, so the N × K score matrix of ``core``'s PyTorch search is never written or read back.
Measured here (AMD EPYC, 2 threads, `benchmarks/quantizer_speed.py`), it takes 0.33 ms for
2,048 × 64 against K = 512 where the PyTorch search takes 0.59 ms, and less again inside a
training step, where the score matrix would first have to be fetched into cache.
``gather`` returns the chosen codes with what a training step needs of them (z - codes, the
histogram, the commitment sum) and ``ema_update`` does the EMA codebook step (statistics,
Laplace smoothing, new codes), each in one pass instead of several small tensor operations,
each of which costs more to launch than to run at these sizes.

``gather`` and ``ema_update`` are the quantizers' only way to these steps: each runs the kernel
where it can and its PyTorch version otherwise, with the same results either way (up to float32
rounding), so a quantizer never asks which one ran. ``search`` is the bare kernel (None where it
cannot run): ``core.nearest_code`` is its wrapper, with the PyTorch search as the fallback.

It is built with the system C++ compiler (``$CXX``, else ``c++``/``g++``/``clang++``) into
``$VQVAE_CACHE_DIR`` (default ``~/.cache/vqvae``), keyed by the source, the compiler, this CPU
and the OpenMP runtime, and loaded with ctypes; building takes well under a second and happens
once per machine. It is linked to the OpenMP runtime PyTorch has loaded, so it shares PyTorch's
threads instead of starting its own. Where any of that is missing (no compiler, PyTorch without
OpenMP, not Linux, ``VQVAE_NATIVE=0``) or a build or self-check fails, PyTorch does the work:
the same indices (ties go to the first code in both) and the same statistics up to float32
rounding, only slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.distributed import all_reduce_sum, world_size
from vqvae.files import atomic_path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
VERSION = 3  # vqvae_kernels_version() of the source this module speaks to
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", "-fopenmp")
# Codes per block: one block's transposed codes (D × block floats) stay in L2 while every row
# tile passes over them. 256 KiB measured best here (64 and 1024 KiB: 5-30% slower at K ≥ 8192).
BLOCK_BYTES = 256 << 10
TILE = 32  # codes per register tile in kernels.cpp


def search(z: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor] | None:
    """z (N, D), codebook (K, D), float32 on CPU -> (indices (N,) int64, min_e ||e||² - 2 z·e
    (N,)), or None when the kernel is unavailable or the inputs are not CPU float32."""
    kernel = _kernel_for((z, codebook))
    return None if kernel is None else _run(kernel, z, codebook)


class Gathered(NamedTuple):
    """The codes a search chose for z (N, D), with what a training step needs of them."""

    codes: Tensor  # (N, D); carries the codebook's gradient where the codebook has one
    residual: Tensor  # (N, D) z - codes, no gradient
    counts: Tensor  # (K,) int64, how often each code was chosen
    sq_sum: Tensor  # () Σ (z - codes)²: float64 from the kernel (its accumulator), else z's dtype


def gather(z: Tensor, codebook: Tensor, indices: Tensor) -> Gathered:
    """z (N, D) without gradient, codebook (K, D), indices (N,) -> ``Gathered``: in one pass
    by the kernel for CPU float32 tensors and a codebook without gradient, else by PyTorch."""
    kernel = None if codebook.requires_grad else _kernel_for((z, codebook), indices)
    if kernel is None:
        codes = F.embedding(indices, codebook)  # (N, D)
        residual = z - codes.detach()
        flat = residual.reshape(-1)
        counts = torch.bincount(indices, minlength=codebook.shape[0])  # (K,)
        return Gathered(codes, residual, counts, torch.dot(flat, flat))
    z, codebook, indices = z.contiguous(), codebook.contiguous(), indices.contiguous()
    (n, d), k = z.shape, codebook.shape[0]
    codes, residual = torch.empty(n, d), torch.empty(n, d)
    counts = torch.empty(k, dtype=torch.long)
    total = kernel.vqvae_gather(
        z.data_ptr(), n, codebook.data_ptr(), k, d, indices.data_ptr(),
        torch.get_num_threads(), codes.data_ptr(), residual.data_ptr(), counts.data_ptr(),
    )  # fmt: skip
    return Gathered(codes, residual, counts, torch.tensor(total, dtype=torch.float64))


def _kernel_for(floats: tuple[Tensor, ...], indices: Tensor | None = None) -> ctypes.CDLL | None:
    """The kernels, where they are available and the tensors are CPU float32 (indices int64)."""
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in floats):
        return None
    if indices is not None and indices.dtype != torch.long:
        return None
    return library()


def ema_update(
    flat: Tensor,
    indices: Tensor,
    counts: Tensor,
    decay: float,
    eps: float,
    cluster_size: Tensor,
    embed_sum: Tensor,
    codebook: Tensor,
) -> None:
    """The EMA codebook step in place (van den Oord et al. 2017, appendix A.1; see
    ``EMAVectorQuantizer``) from this rank's vectors flat (N, D), their indices (N,) and the
    histogram ``counts`` (K,) already summed over ranks: by the kernel in one process for
    contiguous CPU float32 state, else by PyTorch, which sums the vectors over ranks."""
    state = (cluster_size, embed_sum, codebook)  # updated in place: must be contiguous
    kernel = _kernel_for((flat, counts, *state), indices) if world_size() == 1 else None
    if kernel is None or not all(t.is_contiguous() for t in state):
        sums = torch.zeros_like(embed_sum).index_add_(0, indices, flat.to(embed_sum.dtype))
        all_reduce_sum(sums)  # (K, D); counts arrive already summed over ranks
        weight = 1 - decay  # x <- γ·x + (1 - γ)·new
        cluster_size.lerp_(counts, weight)
        embed_sum.lerp_(sums, weight)
        total = cluster_size.sum()  # Laplace smoothing keeps unused codes finite:
        shrink = total / (total + codebook.shape[0] * eps)
        smoothed = (cluster_size + eps) * shrink
        torch.div(embed_sum, smoothed[:, None], out=codebook)
        return
    flat, indices, counts = flat.contiguous(), indices.contiguous(), counts.contiguous()
    (n, d), k = flat.shape, codebook.shape[0]
    kernel.vqvae_ema_update(
        flat.data_ptr(), indices.data_ptr(), n, counts.data_ptr(), k, d, decay, eps,
        cluster_size.data_ptr(), embed_sum.data_ptr(), codebook.data_ptr(),
    )  # fmt: skip


def _run(kernel: ctypes.CDLL, z: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    z, codebook = z.contiguous(), codebook.contiguous()
    (n, d), k = z.shape, codebook.shape[0]
    block = max(TILE, BLOCK_BYTES // (4 * d) // TILE * TILE)
    work = torch.empty(kernel.vqvae_nearest_workspace(k, d))
    indices = torch.empty(n, dtype=torch.long)
    best = torch.empty(n)
    kernel.vqvae_nearest(
        z.data_ptr(), n, codebook.data_ptr(), k, d, block, work.data_ptr(),
        torch.get_num_threads(), indices.data_ptr(), best.data_ptr(),
    )  # fmt: skip
    return indices, best


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel, built first if this machine has none cached; None where unavailable
    (the reason is logged at INFO, or warned when a build or the self-check fails)."""
    if os.environ.get("VQVAE_NATIVE", "1") == "0":
        return _unavailable("VQVAE_NATIVE=0")
    if not sys.platform.startswith("linux"):
        return _unavailable(f"not built on {sys.platform}")
    openmp = _loaded_openmp()
    if openmp is None:
        return _unavailable("PyTorch has no OpenMP runtime loaded")
    compiler = os.environ.get("CXX") or next(
        filter(None, map(shutil.which, ("c++", "g++", "clang++"))), None
    )
    if compiler is None:
        return _unavailable("no C++ compiler found (set CXX)")
    try:
        path = _build(compiler, openmp)
        kernel = _load(path)
    except (OSError, subprocess.SubprocessError) as error:
        return _unavailable(f"build failed: {error}", warn=True)
    if not _self_check(kernel):
        return _unavailable("self-check against the PyTorch search failed", warn=True)
    return kernel


def _unavailable(reason: str, warn: bool = False) -> None:
    report = log.warning if warn else log.info
    report("CPU kernels off (%s); using the PyTorch search and EMA update", reason)
    return None


def _loaded_openmp() -> str | None:
    """Path of the GNU OpenMP runtime PyTorch uses: the copy in PyTorch's own folder (wheels
    bundle one; other packages, scikit-learn among them, may load theirs beside it), else the
    only one loaded."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libgomp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return None
    torch_dir = str(Path(torch.__file__).resolve().parent)
    own = sorted(p for p in paths if p.startswith(torch_dir))
    if own:
        return own[0]
    return min(paths) if len(paths) == 1 else None


def _cache_dir() -> Path:
    root = os.environ.get("VQVAE_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "vqvae"
    )
    return Path(root) / "kernels"


def _build(compiler: str, openmp: str) -> Path:
    """Compile kernels.cpp unless this machine's build is cached; returns the library's path.
    Written to a temporary name and renamed, so concurrent processes never load half a file."""
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(FLAGS).encode(), openmp.encode()):
        key.update(part)
    key.update(_cpu_signature().encode())
    path = _cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        # Linking the runtime by its path makes the loader reuse the copy PyTorch has loaded.
        command = [compiler, *FLAGS, str(SOURCE), "-o", str(tmp), openmp]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise subprocess.SubprocessError(f"{compiler} exited {done.returncode}: {last}")
    log.info("built the CPU kernels: %s", path)
    return path


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU model and its instruction-set flags."""
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _load(path: Path) -> ctypes.CDLL:
    kernel = ctypes.CDLL(str(path))
    if kernel.vqvae_kernels_version() != VERSION:
        raise OSError(f"{path}: interface version {kernel.vqvae_kernels_version()} != {VERSION}")
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    kernel.vqvae_nearest_workspace.argtypes = (i64, i64)
    kernel.vqvae_nearest_workspace.restype = i64
    kernel.vqvae_nearest.argtypes = (p, i64, p, i64, i64, i64, p, ctypes.c_int, p, p)
    kernel.vqvae_nearest.restype = None
    f32 = ctypes.c_float
    kernel.vqvae_ema_update.argtypes = (p, p, i64, p, i64, i64, f32, f32, p, p, p)
    kernel.vqvae_ema_update.restype = None
    kernel.vqvae_gather.argtypes = (p, i64, p, i64, i64, p, ctypes.c_int, p, p, p)
    kernel.vqvae_gather.restype = ctypes.c_double
    return kernel


def _self_check(kernel: ctypes.CDLL) -> bool:
    """The kernel's indices on a small problem with a clear nearest code for every row and a
    tie (duplicate codes: the first wins) equal the exact answer."""
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(100, 9, generator=g)
    codebook[70] = codebook[5]  # a tie
    pick = torch.randint(0, 100, (50,), generator=g)
    pick[0] = 5
    z = codebook[pick] + 1e-3 * torch.randn(50, 9, generator=g)
    expected = torch.cdist(z.double(), codebook.double()).argmin(1)
    indices, _ = _run(kernel, z, codebook)
    return bool(torch.equal(indices, expected)) and int(indices[0]) == 5
