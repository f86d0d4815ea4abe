"""torch.distributed helpers that are no-ops in a single process.

Codebook statistics are not gradients, so DDP does not synchronise them: quantizers call these
to keep EMA counts/sums, usage windows, k-means initialisation and dead-code resets identical on
every rank.

Multi-process runs are started by ``torchrun``, which sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``); ``process_group_from_env`` turns that
environment into a process group, choosing NCCL when CUDA is available and gloo otherwise.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

# A collective that waits longer than this means a peer died; fail instead of hanging forever.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (and return it)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy (and return it)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


# --- process-group set-up ------------------------------------------------------------------------
def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def choose_backend() -> str:
    """NCCL when this machine has CUDA (and torch was built with NCCL), gloo otherwise."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def local_device() -> torch.device:
    """The device this process trains on: its own GPU under NCCL, the CPU otherwise."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def process_group_from_env(timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> Iterator[bool]:
    """Join the process group torchrun describes in the environment; leave it on exit.

    Yields True when this process is one of several. Without torchrun (``WORLD_SIZE`` unset or
    1), or when a process group already exists, it does nothing.
    """
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        yield is_distributed()
        return
    backend = choose_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timeout)
    try:
        yield True
        # Leave together: a rank that tears gloo down while its peer still has a collective in
        # flight can abort ("terminate called without an active exception"), seen under load.
        dist.barrier()
    finally:
        # The training's DDP wrappers sit in reference cycles; freed by the interpreter's
        # teardown, after the group is gone, their reducers' gloo work can abort the process
        # the same way (seen once in a full test run): free them while the group still exists.
        gc.collect()
        dist.destroy_process_group()


# --- small collectives for the training loop (NCCL moves CUDA tensors, gloo CPU ones) -----------
def barrier() -> None:
    if is_distributed():
        dist.barrier()


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """For each flag: is it set on any rank? (One collective for all flags.)"""
    if not is_distributed():
        return tuple(bool(f) for f in flags)
    t = torch.tensor([float(f) for f in flags], device=local_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The average of each scalar over ranks (every rank passes the same keys)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=local_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: v / world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of ``tensor`` (same shape and dtype on all ranks), on the CPU."""
    if not is_distributed():
        return [tensor.detach().cpu()]
    local = tensor.detach().to(local_device())
    out = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]
