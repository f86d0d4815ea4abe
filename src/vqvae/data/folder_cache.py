"""The decode cache of image folders: a folder's decoded pixels, kept once per folder.

Decoding a folder of images is slow (CIFAR-10 as 60,000 JPEGs: about a minute on two cores)
and gives the same arrays every time, so ``load_image_folder`` keeps its result in one file
per folder and decode settings, and later runs read that file instead.

- **Where**: ``$VQVAE_FOLDER_CACHE`` if set (``off`` disables the cache), else the ``folders/``
  subfolder of the package's cache directory (``$VQVAE_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/vqvae``, else ``~/.cache/vqvae``). Never inside the data folder, which may
  be read-only or shared.
- **Which file**: one per (resolved folder path, image size, channels), so a folder that changes
  overwrites its own entry instead of adding one.
- **When it is used**: the file records a key over what the decoded arrays depend on (every
  image's relative path, size in bytes and modification time in nanoseconds, the decode
  settings, this module's format version and Pillow's version); a file whose key differs (an
  image added, removed, replaced or touched) is rebuilt.
- **Never wrong data**: written atomically (``vqvae.files.atomic_path``); a file that cannot be
  read, fails the zip's CRC-32 check, or holds arrays of the wrong shapes is ignored and the
  folder decoded again. Pixels are stored as uint8 only when every value is exactly k/255 (no
  resize, no luma mixing: then uint8 / 255 gives the decoded float32 bit for bit), else as the
  float32 arrays themselves.
- A cache that cannot be written (read-only home, full disk) warns once and the run goes on
  with the decoded arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL

from vqvae.data.common import ImageSet
from vqvae.errors import WriteError
from vqvae.files import atomic_path

FORMAT_VERSION = 1  # bump when the decode or the file layout changes
ENV = "VQVAE_FOLDER_CACHE"
_SPLITS = ("train", "test")


def cache_dir() -> Path | None:
    """The folder the decode caches live in, or None when ``$VQVAE_FOLDER_CACHE=off``."""
    chosen = os.environ.get(ENV)
    if chosen:
        return None if chosen.strip().lower() == "off" else Path(chosen)
    root = os.environ.get("VQVAE_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "vqvae"
    )
    return Path(root) / "folders"


def content_key(entries: list[tuple[str, Path]], settings: dict) -> str:
    """Hex digest over every image's (path relative to the folder, path): the relative path, the
    file's size and mtime (ns); the decode ``settings``, the format version and Pillow's
    version."""
    h = hashlib.sha256()
    head = {"format": FORMAT_VERSION, "pillow": PIL.__version__, "settings": settings}
    h.update(json.dumps(head, sort_keys=True).encode())
    for name, path in entries:
        st = os.stat(path)
        h.update(f"\n{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_file(root: Path, settings: dict) -> Path | None:
    """The cache file of ``root`` under ``settings`` (None when caching is off)."""
    where = cache_dir()
    if where is None:
        return None
    name = json.dumps({"root": str(root.resolve()), **settings}, sort_keys=True)
    return where / f"{root.resolve().name}-{hashlib.sha256(name.encode()).hexdigest()[:16]}.npz"


def load_or_build(
    root: Path,
    entries: list[tuple[str, Path]],
    settings: dict,
    build: Callable[[], tuple[ImageSet, ImageSet]],
) -> tuple[ImageSet, ImageSet]:
    """The (train, test) sets of ``root`` from its cache file when that matches its images
    ``entries`` ((path relative to ``root``, path) of every image) and ``settings``; else
    ``build()`` them and write the cache file."""
    path = cache_file(root, settings)
    if path is None:
        return build()
    key = content_key(entries, settings)
    cached = _read(path, key)
    if cached is not None:
        return cached
    splits = build()
    try:
        _write(path, key, splits)
    except (WriteError, OSError) as exc:
        warnings.warn(f"{path}: decode cache not written ({exc})", stacklevel=2)
    return splits


def _write(path: Path, key: str, splits: tuple[ImageSet, ImageSet]) -> None:
    first = splits[0]
    meta = {
        "key": key,
        "class_names": first.class_names,
        "num_classes": first.num_classes,
        "shapes": [list(s.images.shape) for s in splits],
    }
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for name, part in zip(_SPLITS, splits, strict=True):
        arrays[f"{name}_images"] = _packed(part.images)
        if part.labels is not None:
            arrays[f"{name}_labels"] = part.labels
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _packed(images: np.ndarray, rows: int = 4096) -> np.ndarray:
    """uint8 when that gives ``images`` back bit for bit (see ``_unpacked``), else ``images``.
    In chunks of ``rows`` images, so the temporaries stay small beside a large set."""
    as_bytes = np.empty(images.shape, dtype=np.uint8)
    for start in range(0, len(images), rows):
        part = images[start : start + rows]
        packed = np.rint(part * 255).clip(0, 255).astype(np.uint8)
        if not np.array_equal(_unpacked(packed), part):
            return images
        as_bytes[start : start + rows] = packed
    return as_bytes


def _unpacked(stored: np.ndarray) -> np.ndarray:
    if stored.dtype != np.uint8:
        return stored
    images = stored.astype(np.float32)
    images /= np.float32(255)  # the decoder's own division: the same float32 values
    return images


def _read(path: Path, key: str) -> tuple[ImageSet, ImageSet] | None:
    """The cached sets, or None when the file is absent, stale, unreadable or malformed."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(stored["meta"].tobytes().decode())
            if meta.get("key") != key:
                return None
            parts = []
            for name, shape in zip(_SPLITS, meta["shapes"], strict=True):
                images = _unpacked(stored[f"{name}_images"])
                labels = stored[f"{name}_labels"] if f"{name}_labels" in stored.files else None
                if (
                    list(images.shape) != shape
                    or images.dtype != np.float32
                    or (labels is not None and labels.shape != (shape[0],))
                    or (labels is None) != (meta["class_names"] is None)
                ):
                    raise ValueError("arrays of the wrong shape")
                parts.append(ImageSet(images, labels, meta["num_classes"], meta["class_names"]))
            return parts[0], parts[1]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(
            f"{path}: unreadable decode cache, decoding the folder again ({exc})", stacklevel=3
        )
        return None
