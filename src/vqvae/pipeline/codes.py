"""The index level that every model family's stages share: the run's codes cache
(RUN/codes/<split>.safetensors), the range check on a codes file before decoding, and the
summed NLL of held-out codes under a prior."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae import distributed
from vqvae.data import Codes, load_codes, save_codes
from vqvae.errors import VQVAEError
from vqvae.metrics import nll_bits
from vqvae.pipeline.run import RunDir


def cached_codes(
    run: RunDir,
    data: Any,
    split: str,
    encode: Callable[[Any], np.ndarray],
    codebook_size: int,
    extra_meta: dict[str, Any] | None = None,
) -> Codes:
    """The run's codes of ``split``, re-encoded with ``encode(part)`` when the model is newer
    than them or they were made from other data."""
    path = run.codes_dir / f"{split}.safetensors"
    weights = run.model_dir / "model.safetensors"
    part = getattr(data, split)
    if path.is_file() and path.stat().st_mtime >= weights.stat().st_mtime:
        codes = load_codes(path)
        if codes.meta.get("data") == data.spec and len(codes) == len(part):
            return codes
    meta = {"split": split, "data": data.spec, **(extra_meta or {})}
    save_codes(path, encode(part), part.labels, codebook_size, meta)
    return load_codes(path)


def codes_on_every_rank(run: RunDir, split: str, fill: Callable[[], Codes]) -> Codes:
    """Rank 0 fills the codes cache of ``split`` (``fill()``); the other ranks read what it
    wrote."""
    main = distributed.is_main_process()
    codes = fill() if main else None
    distributed.barrier()
    return codes if main else load_codes(run.codes_dir / f"{split}.safetensors")


def check_index_range(codes_path: str | Path, indices: np.ndarray, codebook_size: int) -> None:
    """Refuse a codes file with an index the model's codebook does not have."""
    if indices.size and int(indices.max()) >= codebook_size:
        raise VQVAEError(
            f"{codes_path}: index {int(indices.max())} is out of range for the model's "
            f"codebook of {codebook_size} codes"
        )


@torch.no_grad()
def summed_nll_bits(
    prior: torch.nn.Module,
    indices: np.ndarray,
    labels: np.ndarray | None,
    cond: np.ndarray | None = None,
    *,
    batch_size: int,
) -> float:
    """Summed NLL in bits of ``indices`` (N, *grid) under ``prior`` (given ``labels`` (N,) and
    the conditioning codes ``cond`` (N, *grid') where the prior takes them), in batches."""
    prior.eval()
    total = 0.0
    for i in range(0, len(indices), batch_size):
        idx = torch.from_numpy(indices[i : i + batch_size])
        lab = None if labels is None else torch.from_numpy(labels[i : i + batch_size])
        c = None if cond is None else torch.from_numpy(cond[i : i + batch_size])
        total += float(nll_bits(prior(idx, lab, c), idx))
    return total
