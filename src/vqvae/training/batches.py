"""Shuffled mini-batches from in-memory tensors, with a resumable position.

The order is a function of (seed, epoch) alone, so a run resumed from a saved ``state_dict``
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ShuffledBatches:
    """Endless stream of batches drawn without replacement, reshuffled every epoch.

    ``tensors`` share their first dimension; ``None`` entries are passed through as ``None``
    (e.g. missing labels). The last incomplete batch of an epoch is dropped so that every step
    sees ``batch_size`` items.
    """

    def __init__(self, tensors: tuple[Tensor | None, ...], batch_size: int, seed: int = 0) -> None:
        present = [t for t in tensors if t is not None]
        if not present or len(present[0]) == 0:
            raise ValueError("ShuffledBatches: no data")
        n = len(present[0])
        if any(len(t) != n for t in present):
            raise ValueError("ShuffledBatches: tensors differ in length")
        self.tensors = tensors
        self.n = n
        self.batch_size = min(batch_size, n)
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    def _permutation(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> tuple[Tensor | None, ...]:
        if self.position + self.batch_size > self.n:
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        idx = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return tuple(None if t is None else t[idx] for t in self.tensors)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)
