"""Image datasets stored as NumPy ``.npz`` / ``.npy`` files.

``.npz`` keys: ``x_train`` and ``x_test`` (with optional ``y_train`` and ``y_test``) give the
official split; ``images`` (with optional ``labels``) is split deterministically (10% test). A
``.npy`` file holds one image array without labels, split the same way. Image arrays may be
``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with C in {1, 3}; value rules are those of
``to_unit_float``. Pickled (object) arrays are refused: loading them could run arbitrary code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vqvae.data.common import (
    ImageSet,
    as_nchw,
    check_labels,
    class_count,
    split_set,
    to_unit_float,
)
from vqvae.data.schemes import Scheme, path_only, register_scheme
from vqvae.errors import DataError

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip file; the second is an empty one


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays in ``path`` (an ``.npy`` file yields the single key ``images``)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    # np.load treats any file that is neither .npy nor .npz as a pickle; check the magic bytes
    # first so that such a file is reported as what it is, not as "pickled data".
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not (head.startswith(_NPY_MAGIC) or head.startswith(_ZIP_MAGICS)):
        raise DataError(f"{path}: not a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"images": loaded}
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except Exception as exc:
        # np.load on damaged bytes can raise almost anything (found by fuzzing): ValueError,
        # SyntaxError or tokenize.TokenError from the header, RuntimeError for an encrypted zip
        # member, NotImplementedError for an unknown compression, EOFError, zlib.error, ...
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: holds object (pickled) arrays, which are not loaded for safety"
            ) from exc
        raise DataError(f"{path}: not a readable .npy/.npz file ({exc})") from exc


def _images(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    source = f"{path} [{key}]"
    return to_unit_float(as_nchw(arrays[key], source), source)


def _labels(arrays: dict[str, np.ndarray], key: str, count: int, path: Path) -> np.ndarray | None:
    if key not in arrays:
        return None
    return check_labels(arrays[key], count, f"{path} [{key}]")


def load_array_file(path: Path) -> tuple[ImageSet, ImageSet]:
    """(train, test) from an ``.npz`` or ``.npy`` file (see the module docstring)."""
    arrays = _read_arrays(path)
    keys = set(arrays)
    if {"x_train", "x_test"} <= keys:
        if ("y_train" in keys) != ("y_test" in keys):
            raise DataError(f"{path}: has only one of y_train and y_test")
        x_train, x_test = _images(arrays, "x_train", path), _images(arrays, "x_test", path)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(
                f"{path}: x_train images are {x_train.shape[1:]} (C, H, W) "
                f"but x_test images are {x_test.shape[1:]}"
            )
        y_train = _labels(arrays, "y_train", len(x_train), path)
        y_test = _labels(arrays, "y_test", len(x_test), path)
        num_classes = class_count(y_train, y_test)
        return (
            ImageSet(images=x_train, labels=y_train, num_classes=num_classes),
            ImageSet(images=x_test, labels=y_test, num_classes=num_classes),
        )
    if "images" in keys:
        images = _images(arrays, "images", path)
        labels = _labels(arrays, "labels", len(images), path)
        return split_set(images, labels, str(path))
    found = ", ".join(sorted(keys)) or "none"
    raise DataError(
        f"{path}: expected arrays x_train and x_test (optional y_train, y_test) "
        f"or images (optional labels), found: {found}"
    )


# One reader for both: the file's magic bytes, not the scheme, say which format it is.
register_scheme(Scheme("npz", "FILE", path_only(load_array_file)))
register_scheme(Scheme("npy", "FILE", path_only(load_array_file)))
