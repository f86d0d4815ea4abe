"""Shuffled mini-batches from in-memory tensors, with a resumable position.

The order is a function of (seed, epoch) alone, so a run resumed from a saved ``state_dict``
sees exactly the batches an uninterrupted run would have seen. In a multi-process run every rank
draws the same global permutation and takes its own disjoint slice of each global batch, so
``W`` ranks with batch ``b`` see, together, exactly the items one process with batch ``W·b``
would see.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vqvae import distributed


def as_float(array: np.ndarray) -> Tensor:
    """A float32 tensor of ``array`` (sharing its memory when it already is float32 and
    contiguous): how the pipeline and the evaluation hand NumPy data to a model."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class ShuffledBatches:
    """Endless stream of batches drawn without replacement, reshuffled every epoch.

    ``tensors`` share their first dimension; ``None`` entries are passed through as ``None``
    (e.g. missing labels). ``batch_size`` is per process; a step consumes ``batch_size ·
    world_size`` items of the global permutation, of which this rank gets slice ``rank``. The
    last incomplete global batch of an epoch is dropped so that every step sees full batches.
    ``rank`` and ``world_size`` default to this process's place in the current process group.
    """

    def __init__(
        self,
        tensors: tuple[Tensor | None, ...],
        batch_size: int,
        seed: int = 0,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        present = [t for t in tensors if t is not None]
        if not present or len(present[0]) == 0:
            raise ValueError("ShuffledBatches: no data")
        n = len(present[0])
        if any(len(t) != n for t in present):
            raise ValueError("ShuffledBatches: tensors differ in length")
        self.world_size = distributed.world_size() if world_size is None else world_size
        self.rank = distributed.rank() if rank is None else rank
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"ShuffledBatches: rank {self.rank} of {self.world_size}")
        if n < self.world_size:
            raise ValueError(f"ShuffledBatches: {n} items cannot feed {self.world_size} ranks")
        self.tensors = tensors
        self.n = n
        self.batch_size = min(batch_size, n // self.world_size)
        self.seed = seed
        self.epoch = 0
        self.position = 0  # in the global permutation
        self._order = self._permutation(0)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch_size

    def _permutation(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> tuple[Tensor | None, ...]:
        if self.position + self.global_batch_size > self.n:
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        start = self.position + self.rank * self.batch_size
        idx = self._order[start : start + self.batch_size]
        self.position += self.global_batch_size
        return tuple(None if t is None else t[idx] for t in self.tensors)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)
