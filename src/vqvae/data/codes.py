"""Codes files: a dataset encoded by a trained VQ-VAE (codebook indices, labels, metadata).

Stored as safetensors: tensor ``indices`` (int32 when the codebook fits, to halve the size; read
back as int64), optional tensor ``labels`` (int64), and string metadata ``format``,
``codebook_size`` and ``meta`` (the JSON of the caller's ``meta`` dict).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from vqvae.errors import DataError
from vqvae.files import atomic_write_bytes

CODES_FORMAT = "vqvae-codes/1"


@dataclass
class Codes:
    """Codebook indices int64 ``(N, *grid)``, labels int64 ``(N,)`` or None, and metadata."""

    indices: np.ndarray
    labels: np.ndarray | None
    codebook_size: int
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def _check(indices: np.ndarray, labels: np.ndarray | None, codebook_size: int, source: str) -> None:
    """Shared validation of what is saved and what is loaded."""
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
        raise DataError(
            f"{source}: codebook size must be a positive integer, got {codebook_size!r}"
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise DataError(f"{source}: indices have type {indices.dtype}, expected integers")
    if indices.ndim < 1:
        raise DataError(f"{source}: indices must have shape (N, ...), got a scalar")
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= codebook_size:
            raise DataError(
                f"{source}: indices range from {lo} to {hi}, outside [0, {codebook_size})"
            )
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
            raise DataError(
                f"{source}: labels must be 1-D integers, got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.shape[0] != indices.shape[0]:
            raise DataError(f"{source}: {labels.shape[0]} labels for {indices.shape[0]} codes")


def save_codes(
    path: str | os.PathLike,
    indices: np.ndarray,
    labels: np.ndarray | None,
    codebook_size: int,
    meta: dict | None = None,
) -> None:
    """Write a codes file atomically (see the module docstring for the layout)."""
    path = Path(path)
    indices = np.asarray(indices)
    labels = None if labels is None else np.asarray(labels)
    _check(indices, labels, codebook_size, str(path))
    try:
        meta_json = json.dumps(meta or {}, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: codes metadata is not JSON-serialisable ({exc})") from exc
    small = codebook_size <= np.iinfo(np.int32).max
    tensors = {
        "indices": np.ascontiguousarray(indices, dtype=np.int32 if small else np.int64),
    }
    if labels is not None:
        tensors["labels"] = np.ascontiguousarray(labels, dtype=np.int64)
    metadata = {"format": CODES_FORMAT, "codebook_size": str(codebook_size), "meta": meta_json}
    atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=metadata))


def load_codes(path: str | os.PathLike) -> Codes:
    """Read and validate a codes file written by ``save_codes``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such codes file")
    try:
        with safetensors.safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            keys = set(f.keys())
            if "indices" not in keys:
                raise DataError(f"{path}: codes file has no 'indices' tensor")
            indices = f.get_tensor("indices")
            labels = f.get_tensor("labels") if "labels" in keys else None
    except DataError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError/ValueError
        raise DataError(f"{path}: not a readable codes (safetensors) file ({exc})") from exc
    if metadata.get("format") != CODES_FORMAT:
        raise DataError(
            f"{path}: not a codes file (format {metadata.get('format')!r}, "
            f"expected {CODES_FORMAT!r})"
        )
    try:
        codebook_size = int(metadata["codebook_size"])
        meta = json.loads(metadata.get("meta", "{}"))
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: bad codes metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path}: codes metadata 'meta' is not a JSON object")
    _check(indices, labels, codebook_size, str(path))
    return Codes(
        indices=indices.astype(np.int64),
        labels=None if labels is None else labels.astype(np.int64),
        codebook_size=codebook_size,
        meta=meta,
    )
