"""What every loader of the package shares: the dataset types and the conversions.

Every image loader returns a pair of ``ImageSet`` (train, test) whose images are float32
``(N, C, H, W)`` in ``[0, 1]``; ``load_data`` (``vqvae.data.datasets``) then applies the optional
resize and channel conversion in one place so that all sources behave the same. This module
imports no other module of the package, so every loader can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from vqvae.errors import DataError

SPLIT_SEED = 0
TEST_FRACTION = 0.1
# ITU-R BT.601 luma weights; Pillow's own RGB -> L conversion uses the same ones.
LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class ImageSet:
    """Images (float32 ``(N, C, H, W)`` in [0, 1]) with optional int64 labels."""

    images: np.ndarray
    labels: np.ndarray | None
    num_classes: int | None
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class DataSplits:
    """The train and test ``ImageSet`` of one dataset, and the spec string it came from."""

    train: ImageSet
    test: ImageSet
    spec: str

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def height(self) -> int:
        return int(self.train.images.shape[2])

    @property
    def width(self) -> int:
        return int(self.train.images.shape[3])


def to_unit_float(array: np.ndarray, source: str) -> np.ndarray:
    """Pixel values as float32 in [0, 1].

    uint8 (and any other integer type whose values lie in 0..255) is divided by 255, bool maps to
    0/1, floats must already be finite and within [0, 1]: guessing a scale for floats would
    silently train on wrongly scaled data.
    """
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    if np.issubdtype(array.dtype, np.integer):
        if array.size:
            lo, hi = int(array.min()), int(array.max())
            if lo < 0 or hi > 255:
                raise DataError(
                    f"{source}: integer pixel values range from {lo} to {hi}, expected 0..255"
                )
        return array.astype(np.float32) / np.float32(255)
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise DataError(f"{source}: {bad} non-finite pixel values (NaN or inf)")
        if array.size:
            lo, hi = float(array.min()), float(array.max())
            if lo < 0.0 or hi > 1.0:
                raise DataError(
                    f"{source}: float pixel values range from {lo:g} to {hi:g}, expected [0, 1]"
                )
        return array.astype(np.float32)
    raise DataError(f"{source}: pixel values of type {array.dtype} are not numbers")


def as_nchw(array: np.ndarray, source: str) -> np.ndarray:
    """View an image array as ``(N, C, H, W)``.

    Accepts ``(N, H, W)``, ``(N, C, H, W)`` and ``(N, H, W, C)`` with C in {1, 3}. When both axis 1
    and the last axis could be channels (only for images 1 or 3 pixels wide) channels-first wins.
    """
    shape = tuple(array.shape)
    if array.ndim == 3:
        out = array[:, None, :, :]
    elif array.ndim == 4 and shape[1] in (1, 3):
        out = array
    elif array.ndim == 4 and shape[3] in (1, 3):
        out = array.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{source}: image array has shape {shape}, expected (N, H, W), (N, C, H, W) "
            "or (N, H, W, C) with C = 1 or 3"
        )
    if min(out.shape) == 0:
        raise DataError(f"{source}: image array of shape {shape} is empty")
    return out


def check_labels(labels: np.ndarray, count: int, source: str) -> np.ndarray:
    """Validated labels as int64: integer, 1-D, one per image, non-negative."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{source}: labels have type {labels.dtype}, expected integers")
    if labels.ndim != 1:
        raise DataError(f"{source}: labels have shape {tuple(labels.shape)}, expected (N,)")
    if labels.shape[0] != count:
        raise DataError(f"{source}: {labels.shape[0]} labels for {count} images")
    if labels.size and int(labels.min()) < 0:
        raise DataError(f"{source}: negative label {int(labels.min())}")
    return labels.astype(np.int64)


def convert_channels(images: np.ndarray, channels: int, source: str) -> np.ndarray:
    """Convert ``(N, C, H, W)`` images to ``channels`` (1 or 3) channels.

    RGB -> grey uses the ITU-R 601 luma weights; grey -> RGB repeats the grey plane.
    """
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        grey = np.tensordot(LUMA_601, images, axes=([0], [1]))  # (N, H, W)
        return np.clip(grey, 0.0, 1.0).astype(np.float32)[:, None]
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    raise DataError(f"{source}: cannot convert {have}-channel images to {channels} channels")


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, C, H, W)`` float images to ``size`` x ``size`` (Pillow bilinear, per plane)."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = np.empty((n, c, size, size), dtype=np.float32)
    for i in range(n):
        for j in range(c):
            plane = Image.fromarray(np.ascontiguousarray(images[i, j], dtype=np.float32), mode="F")
            out[i, j] = np.asarray(plane.resize((size, size), Image.Resampling.BILINEAR))
    # Bilinear never overshoots, but keep the [0, 1] promise against float rounding.
    return np.clip(out, 0.0, 1.0, out=out)


def split_indices(
    count: int, source: str, test_count: int | None = None, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/test split of ``range(count)`` for sources without an official one.

    The last ``test_count`` (default 10%, at least 1) entries of a seeded permutation are the test
    set. Each part is returned sorted so the data keep their source order. ``RandomState``, not
    ``default_rng``: NumPy freezes its stream, so the split never changes between versions.
    """
    if test_count is None:
        test_count = max(1, int(count * TEST_FRACTION))
    if count < 2 or not 0 < test_count < count:
        raise DataError(
            f"{source}: {count} images are too few to split into train and test sets (need 2+)"
        )
    order = np.random.RandomState(seed).permutation(count)
    return np.sort(order[:-test_count]), np.sort(order[-test_count:])


def split_set(
    images: np.ndarray,
    labels: np.ndarray | None,
    source: str,
    class_names: list[str] | None = None,
    test_count: int | None = None,
) -> tuple[ImageSet, ImageSet]:
    """Split one labelled or unlabelled image array into (train, test) with ``split_indices``."""
    train_idx, test_idx = split_indices(len(images), source, test_count)
    num_classes = class_count(labels, class_names=class_names)

    def pick(idx: np.ndarray) -> ImageSet:
        return ImageSet(
            images=images[idx],
            labels=None if labels is None else labels[idx],
            num_classes=num_classes,
            class_names=class_names,
        )

    return pick(train_idx), pick(test_idx)


def class_count(*labels: np.ndarray | None, class_names: list[str] | None = None) -> int | None:
    """Number of classes: the class-name count if known, else max label + 1 (None: unlabelled)."""
    if class_names is not None:
        return len(class_names)
    present = [lab for lab in labels if lab is not None and lab.size]
    if not present:
        return None
    return max(int(lab.max()) for lab in present) + 1
