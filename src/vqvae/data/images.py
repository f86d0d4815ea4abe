"""A folder of image files (PNG, JPEG, BMP, GIF) as a dataset.

Layout:

- If the folder has ``train/`` and ``test/`` subfolders, those are the two splits. Otherwise the
  files are sorted by relative path and split deterministically (10% test, at least one image).
- Inside a split (or the folder itself), subfolders that hold images are classes: their sorted
  names are the class names and give the labels (images in nested folders belong to the
  top-level class folder). Without class subfolders the images are unlabelled; loose images beside
  class subfolders are an error, since they would have no label.
- Files and folders whose names start with "." are ignored, as are files with other extensions.

Pixels: transparency is composited onto a white background. With ``channels=None`` the result
has 1 channel when every image is greyscale (modes 1, L, LA, I;16, or a palette whose colours are
all grey) and 3 channels otherwise; grey images are then repeated into RGB. With ``channels``
given, RGB converts to grey by the ITU-R 601 luma weights. Every image is resized so its shorter
side is ``image_size`` (Lanczos) and then center-cropped to a square.

Decoding: once per folder and settings. The decoded arrays are kept in a cache file keyed by
the folder's content (every image's relative path, size and mtime) and the settings, which later
loads read instead; a changed folder is decoded again (``vqvae.data.folder_cache``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from vqvae.data import folder_cache
from vqvae.data.common import (
    ImageSet,
    class_count,
    convert_channels,
    split_indices,
)
from vqvae.data.schemes import Scheme, register_scheme
from vqvae.errors import DataError

DEFAULT_IMAGE_SIZE = 32
PROGRESS_FROM = 200  # a progress bar while decoding folders of at least this many images
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
_GREY_MODES = frozenset({"1", "L", "LA", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def find_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, hidden entries skipped), sorted by relative path."""
    return [path for _, path in _find(root)]


def _find(root: Path) -> list[tuple[str, Path]]:
    """``find_images`` with each file's path relative to ``root`` ("a/b.png"), by string
    operations: pathlib's per-file parsing was most of a cached 60,000-image load."""
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]  # prune hidden folders
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        base = Path(folder)
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append((prefix + name, base / name))
    found.sort(key=lambda entry: entry[0])
    return found


def read_image(path: Path, image_size: int) -> np.ndarray:
    """One image as float32 ``(C, image_size, image_size)`` in [0, 1], C = 1 (grey) or 3."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (then raises) on huge images; the raise is what we want to report.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)  # camera JPEGs: honour the stored rotation
                pixels = _to_float(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # UnidentifiedImageError is an OSError; broken headers can raise SyntaxError/ValueError.
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    except Image.DecompressionBombWarning as exc:
        raise DataError(f"{path}: image too large ({exc})") from exc
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise DataError(f"{path}: image has no pixels")
    return _resize_and_crop(pixels, image_size)


def _to_float(img: Image.Image) -> np.ndarray:
    """Pixels as float32 ``(H, W, C)`` in [0, 1], C = 1 for greyscale else 3, alpha on white."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # 16-bit greyscale PNGs: keep the full precision instead of Pillow's clipping to 8 bits.
        values = np.asarray(img, dtype=np.float32)
        return np.clip(values / 65535.0, 0.0, 1.0)[:, :, None]
    if img.mode in _GREY_MODES:
        la = np.asarray(img.convert("LA"), dtype=np.float32) / 255.0
        return _on_white(la[:, :, :1], la[:, :, 1:])
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    rgb = _on_white(rgba[:, :, :3], rgba[:, :, 3:])
    if (
        img.mode in ("P", "PA")
        and np.array_equal(rgb[..., 0], rgb[..., 1])
        and np.array_equal(rgb[..., 1], rgb[..., 2])
    ):
        return rgb[:, :, :1]  # a palette image whose colours are all grey is greyscale
    return rgb


def _on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return colour * alpha + (1.0 - alpha)


def _resize_and_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` (Lanczos, per channel in float), then center-crop to a square."""
    h, w, c = pixels.shape
    if h <= w:
        new_h, new_w = size, max(size, round(w * size / h))
    else:
        new_h, new_w = max(size, round(h * size / w)), size
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = np.empty((c, size, size), dtype=np.float32)
    for j in range(c):
        plane = Image.fromarray(np.ascontiguousarray(pixels[:, :, j]), mode="F")
        if (new_h, new_w) != (h, w):
            plane = plane.resize((new_w, new_h), Image.Resampling.LANCZOS)
        out[j] = np.asarray(plane)[top : top + size, left : left + size]
    # Lanczos rings slightly past the input range at sharp edges.
    return np.clip(out, 0.0, 1.0, out=out)


def _scan_split(root: Path, entries: list[tuple[str, Path]]) -> tuple[list[Path], list[str] | None]:
    """Image files of one split (``_find(root)``) and, when it has class subfolders, the class
    of each file."""
    files = [path for _, path in entries]
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    top = [rel.split("/") for rel, _ in entries]
    loose = [p for p, parts in zip(files, top, strict=True) if len(parts) == 1]
    if len(loose) == len(files):
        return files, None
    if loose:
        raise DataError(
            f"{root}: has class subfolders but also loose images (such as {loose[0].name}) "
            "that would have no label"
        )
    return files, [parts[0] for parts in top]


def _build(
    files: list[Path],
    classes: list[str] | None,
    class_names: list[str] | None,
    image_size: int,
    progress: tqdm,
) -> tuple[list[np.ndarray], np.ndarray | None]:
    pixels = []
    for p in files:
        pixels.append(read_image(p, image_size))
        progress.update()
    if classes is None or class_names is None:
        return pixels, None
    index = {name: i for i, name in enumerate(class_names)}
    return pixels, np.array([index[c] for c in classes], dtype=np.int64)


def _stack(pixels: list[np.ndarray], channels: int, source: str) -> np.ndarray:
    return np.stack([convert_channels(p[None], channels, source)[0] for p in pixels])


def load_image_folder(
    root: Path, *, image_size: int = DEFAULT_IMAGE_SIZE, channels: int | None = None
) -> tuple[ImageSet, ImageSet]:
    """(train, test) from a folder of images (see the module docstring for the rules)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        present, absent = (train_dir, "test") if train_dir.is_dir() else (test_dir, "train")
        raise DataError(f"{root}: has a {present.name}/ folder but no {absent}/ folder")

    entries = _find(root)
    if train_dir.is_dir():
        loose = [p for rel, p in entries if rel.split("/", 1)[0] not in ("train", "test")]
        if loose:
            raise DataError(f"{root}: images outside train/ and test/ (such as {loose[0]})")
        split = {
            name: [(rel[len(name) + 1 :], p) for rel, p in entries if rel.startswith(name + "/")]
            for name in ("train", "test")
        }
        train_files, train_classes = _scan_split(train_dir, split["train"])
        test_files, test_classes = _scan_split(test_dir, split["test"])
        if (train_classes is None) != (test_classes is None):
            raise DataError(
                f"{root}: one of train/ and test/ has class subfolders and the other has not"
            )
    else:
        files, classes = _scan_split(root, entries)
        train_idx, test_idx = split_indices(len(files), str(root))
        train_files = [files[i] for i in train_idx]
        test_files = [files[i] for i in test_idx]
        train_classes = None if classes is None else [classes[i] for i in train_idx]
        test_classes = None if classes is None else [classes[i] for i in test_idx]

    class_names = (
        None if train_classes is None else sorted(set(train_classes) | set(test_classes or []))
    )

    def decode() -> tuple[ImageSet, ImageSet]:
        train, test = (train_files, train_classes), (test_files, test_classes)
        return _decode(root, train, test, class_names, image_size, channels)

    settings = {"image_size": image_size, "channels": channels}
    return folder_cache.load_or_build(root, entries, settings, decode)


def _decode(
    root: Path,
    train: tuple[list[Path], list[str] | None],
    test: tuple[list[Path], list[str] | None],
    class_names: list[str] | None,
    image_size: int,
    channels: int | None,
) -> tuple[ImageSet, ImageSet]:
    """Decode every image of both splits (with a progress bar for large folders)."""
    total = len(train[0]) + len(test[0])
    with tqdm(
        total=total, desc=f"decoding {root.name}", unit="image", disable=total < PROGRESS_FROM
    ) as progress:
        train_pixels, train_labels = _build(*train, class_names, image_size, progress)
        test_pixels, test_labels = _build(*test, class_names, image_size, progress)
    if channels is None:
        grey = all(p.shape[0] == 1 for p in train_pixels + test_pixels)
        channels = 1 if grey else 3
    num_classes = class_count(class_names=class_names)
    return (
        ImageSet(
            images=_stack(train_pixels, channels, str(root)),
            labels=train_labels,
            num_classes=num_classes,
            class_names=class_names,
        ),
        ImageSet(
            images=_stack(test_pixels, channels, str(root)),
            labels=test_labels,
            num_classes=num_classes,
            class_names=class_names,
        ),
    )


def _load_folder_spec(
    root: Path, *, image_size: int | None = None, channels: int | None = None
) -> tuple[ImageSet, ImageSet]:
    """The ``folder:DIR`` loader: images are always resized (to 32 pixels unless told)."""
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    return load_image_folder(root, image_size=size, channels=channels)


register_scheme(Scheme("folder", "DIR", _load_folder_spec))
