"""Plain vectors (tabular rows, embeddings) from NumPy files, for ``model.kind = "mlp"``.

``npz:FILE`` keys: ``x_train`` and ``x_test`` (optional ``y_train``, ``y_test``) give the split;
``vectors`` (optional ``labels``) is split deterministically (10% test, as for images). A
``.npy`` file holds one unlabelled ``vectors`` array. Vectors are 2-D ``(N, F)`` arrays of finite
numbers (any scale: the model standardises each feature); labels are non-negative integers.
Pickled (object) arrays are refused, as for image arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vqvae.data.arrays import _read_arrays
from vqvae.data.common import check_labels, class_count, split_indices
from vqvae.errors import DataError

VECTOR_SPEC_FORMS = ("npz:FILE", "npy:FILE")


@dataclass
class VectorSet:
    vectors: np.ndarray  # (N, F) float32
    labels: np.ndarray | None
    num_classes: int | None

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass
class VectorSplits:
    train: VectorSet
    test: VectorSet
    spec: str

    @property
    def features(self) -> int:
        return int(self.train.vectors.shape[1])


def _vectors(array: np.ndarray, source: str) -> np.ndarray:
    if array.ndim != 2 or 0 in array.shape:
        raise DataError(f"{source}: vectors must be a non-empty (N, F) array, got {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{source}: vectors of type {array.dtype} are not numbers")
    out = array.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(out)))
    if bad:
        raise DataError(f"{source}: {bad} non-finite values (NaN, inf or beyond float32)")
    return out


def load_vectors(spec: str) -> VectorSplits:
    """(train, test) vectors of ``npz:FILE`` or ``npy:FILE`` (see the module docstring)."""
    scheme, _, arg = spec.partition(":")
    if scheme not in ("npz", "npy") or not arg:
        raise DataError(
            f"model.kind = 'mlp' reads {' or '.join(VECTOR_SPEC_FORMS)}, got data spec {spec!r}"
        )
    path = Path(arg).expanduser()
    arrays = _read_arrays(path)
    if "images" in arrays and len(arrays) == 1:  # what _read_arrays calls a .npy's array
        arrays = {"vectors": arrays["images"]}
    keys = set(arrays)

    def labels(key: str, count: int) -> np.ndarray | None:
        return check_labels(arrays[key], count, f"{path} [{key}]") if key in arrays else None

    if {"x_train", "x_test"} <= keys:
        x_train = _vectors(arrays["x_train"], f"{path} [x_train]")
        x_test = _vectors(arrays["x_test"], f"{path} [x_test]")
        if x_train.shape[1] != x_test.shape[1]:
            raise DataError(
                f"{path}: x_train has {x_train.shape[1]} features, x_test {x_test.shape[1]}"
            )
        if ("y_train" in keys) != ("y_test" in keys):
            raise DataError(f"{path}: has only one of y_train and y_test")
        y_train, y_test = labels("y_train", len(x_train)), labels("y_test", len(x_test))
    elif "vectors" in keys:
        x = _vectors(arrays["vectors"], f"{path} [vectors]")
        y = labels("labels", len(x))
        train_idx, test_idx = split_indices(len(x), str(path))
        x_train, x_test = x[train_idx], x[test_idx]
        y_train = None if y is None else y[train_idx]
        y_test = None if y is None else y[test_idx]
    else:
        found = ", ".join(sorted(keys)) or "none"
        raise DataError(
            f"{path}: expected arrays x_train and x_test (optional y_train, y_test) or vectors "
            f"(optional labels), found: {found}"
        )
    num_classes = class_count(y_train, y_test)
    return VectorSplits(
        VectorSet(x_train, y_train, num_classes), VectorSet(x_test, y_test, num_classes), spec
    )
