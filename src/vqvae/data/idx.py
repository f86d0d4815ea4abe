"""The IDX format of MNIST and Fashion-MNIST: a strict reader and a small writer.

An IDX file is two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values, big-endian and row-major. The 32-bit "magic number" is the first four
bytes: 2051 (0x00000803) for the image files, unsigned bytes in 3 dimensions, and 2049
(0x00000801) for the label files, unsigned bytes in 1 dimension.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from functools import partial
from pathlib import Path

import numpy as np

from vqvae.data.common import ImageSet, as_nchw, check_labels, class_count, to_unit_float
from vqvae.data.schemes import Scheme, path_only, register_scheme
from vqvae.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# The four official file names; the same names without ".gz" are accepted too.
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# Dataset name -> class names (index = label).
IDX_DATASETS: dict[str, list[str]] = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}

# IDX type code -> NumPy dtype as stored (big-endian).
_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {(dt.kind, dt.itemsize): code for code, dt in _TYPES.items()}


def parse_idx(
    data: bytes, source: str, expected_magic: int | None = None, what: str = "IDX"
) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into a native-endian array.

    Checks the magic number (against ``expected_magic`` when given), the type code, the header
    length and that the payload has exactly the size the dimensions call for.
    """
    if len(data) < 4:
        raise DataError(f"{source}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{source}: bad magic number {magic}, expected {expected_magic} ({what})")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: bad magic number {magic}, not an IDX file")
    code, ndim = data[2], data[3]
    if code not in _TYPES:
        raise DataError(f"{source}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{source}: truncated IDX header, expected {header} bytes for {ndim} dimensions, "
            f"got {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[code]
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing bytes"
        raise DataError(
            f"{source}: {problem}, expected {expected} bytes for dimensions "
            f"{'x'.join(map(str, dims))}, got {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype, count=count, offset=header)
    # Copy into native byte order: a writable array that does not pin the file's bytes.
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    """The bytes of an uncompressed IDX file holding ``array`` (the inverse of ``parse_idx``)."""
    array = np.asarray(array)
    code = _CODE_OF.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise DataError(f"IDX cannot store values of type {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"IDX cannot store an array with {array.ndim} dimensions")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=_TYPES[code]).tobytes()


def read_idx(path: Path, expected_magic: int | None = None, what: str = "IDX") -> np.ndarray:
    """Read an IDX file; names ending in ``.gz`` are gunzipped first."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            # BadGzipFile (an OSError): not gzip / bad CRC; EOFError: cut short; zlib: corrupt.
            raise DataError(f"{path}: not a valid gzip file ({exc})") from exc
    return parse_idx(raw, str(path), expected_magic, what)


def find_idx_file(directory: Path, name: str) -> Path:
    """``directory/name``, or the same name without ``.gz``; DataError naming it when absent."""
    path = directory / name
    if path.is_file():
        return path
    plain = directory / name.removesuffix(".gz")
    if plain.is_file():
        return plain
    raise DataError(f"{path}: missing (nor is there an uncompressed {plain.name})")


def load_idx_split(
    directory: Path, images_name: str, labels_name: str, class_names: list[str]
) -> ImageSet:
    """One split (images + labels) of an IDX dataset as an ``ImageSet``."""
    images_path = find_idx_file(directory, images_name)
    labels_path = find_idx_file(directory, labels_name)
    raw_images = read_idx(images_path, IMAGES_MAGIC, "IDX images")
    raw_labels = read_idx(labels_path, LABELS_MAGIC, "IDX labels")
    if raw_images.shape[0] != raw_labels.shape[0]:
        raise DataError(
            f"{labels_path}: {raw_labels.shape[0]} labels for the {raw_images.shape[0]} images "
            f"in {images_path.name}"
        )
    images = to_unit_float(as_nchw(raw_images, str(images_path)), str(images_path))
    labels = check_labels(raw_labels, len(images), str(labels_path))
    if labels.size and int(labels.max()) >= len(class_names):
        raise DataError(
            f"{labels_path}: label {int(labels.max())} out of range, "
            f"expected 0..{len(class_names) - 1}"
        )
    return ImageSet(
        images=images,
        labels=labels,
        num_classes=class_count(labels, class_names=class_names),
        class_names=list(class_names),
    )


def load_idx_dataset(directory: Path, name: str) -> tuple[ImageSet, ImageSet]:
    """The official (train, test) splits of ``name`` ("mnist", "fashion-mnist") in ``directory``."""
    if name not in IDX_DATASETS:
        raise DataError(f"unknown IDX dataset {name!r}: expected one of {', '.join(IDX_DATASETS)}")
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder (expected the four {name} IDX files)")
    class_names = IDX_DATASETS[name]
    train = load_idx_split(directory, TRAIN_IMAGES, TRAIN_LABELS, class_names)
    test = load_idx_split(directory, TEST_IMAGES, TEST_LABELS, class_names)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"{directory}: train images are {train.images.shape[2]}x{train.images.shape[3]} "
            f"but test images are {test.images.shape[2]}x{test.images.shape[3]}"
        )
    return train, test


for _name in IDX_DATASETS:  # mnist:DIR, fashion-mnist:DIR
    register_scheme(Scheme(_name, "DIR", path_only(partial(load_idx_dataset, name=_name))))
