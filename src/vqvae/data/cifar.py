"""CIFAR-10 and CIFAR-100 "python version" batches, read without trusting pickle.

The official archives (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``) hold Python 2
pickles of dicts: ``b"data"`` is a uint8 NumPy array ``(N, 3072)`` whose rows are the 1024 red,
then green, then blue values of a 32×32 image (row-major); the labels are ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` (CIFAR-100), lists of ints. CIFAR-10's training set is
``data_batch_1`` … ``data_batch_5`` and its test set ``test_batch``; CIFAR-100's are ``train``
and ``test``.

Loading a pickle can run any code it names. These files are read by ``RestrictedUnpickler``,
which resolves only the few names a plain NumPy array is made from, and even those are replaced
by stand-ins: the array is rebuilt here from its shape, a plain numeric dtype and its bytes, so
no untrusted state ever reaches NumPy's own unpickling code. Anything else is a ``DataError``.

An archive is read member by member in memory and never extracted to disk; an archive holding a
member with an absolute path, a ``..`` component, a link or a device is refused outright.
"""

from __future__ import annotations

import io
import math
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vqvae.data.common import ImageSet, as_nchw, check_labels, to_unit_float
from vqvae.data.schemes import Scheme, path_only, register_scheme
from vqvae.errors import DataError

SIDE = 32
ROW_BYTES = 3 * SIDE * SIDE
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR100_TRAIN, CIFAR100_TEST = "train", "test"
ARCHIVE_FOLDERS = ("cifar-10-batches-py", "cifar-100-python")
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
# A CIFAR batch is about 30 MB; anything far larger is not one (and is not read into memory).
MAX_BATCH_BYTES = 256 << 20

# Plain numeric dtypes an array in a batch may have (no objects, no structured records).
_NUMERIC_DTYPES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"})
_BYTE_ORDERS = frozenset({"<", ">", "|", "="})


# --- the restricted unpickler ---------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


class _DType:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` plus its pickled state (byte order)."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        text = _text(spec)
        if text not in _NUMERIC_DTYPES:
            raise pickle.UnpicklingError(f"refusing array type {spec!r} (plain numbers only)")
        self.spec = text
        self.order = "|"

    def __setstate__(self, state: Any) -> None:
        order = _text(state[1]) if isinstance(state, tuple) and len(state) > 1 else None
        if order not in _BYTE_ORDERS:
            raise pickle.UnpicklingError(f"bad array type state {state!r}")
        self.order = order

    def numpy(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        return dtype if self.order in ("|", "=") else dtype.newbyteorder(self.order)


class _NDArrayName:
    """What the name ``numpy.ndarray`` resolves to: only ``_Array`` accepts it (calling NumPy's
    constructor from a pickle would allocate any amount of uninitialised memory)."""


class _Array:
    """Stand-in for ``numpy.core.multiarray._reconstruct(ndarray, ...)`` and its state."""

    def __init__(self, subtype: Any, shape: Any, typecode: Any) -> None:
        if subtype is not _NDArrayName:
            raise pickle.UnpicklingError("refusing an array subclass")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("bad array state")
        _, shape, dtype, fortran, raw = state
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if isinstance(raw, str):  # a Python 2 string unpickled as text
        raw = raw.encode("latin-1")
    if not isinstance(raw, bytes | bytearray) or not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("bad array data")
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise pickle.UnpicklingError(f"bad array shape {shape!r}")
    np_dtype = dtype.numpy()
    if len(raw) != math.prod(shape) * np_dtype.itemsize:
        raise pickle.UnpicklingError(
            f"array of shape {shape} needs {math.prod(shape) * np_dtype.itemsize} bytes, "
            f"has {len(raw)}"
        )
    flat = np.frombuffer(bytes(raw), dtype=np_dtype)
    return flat.reshape(shape, order=order).astype(np_dtype.newbyteorder("="))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for ``numpy.core.numeric._frombuffer`` (arrays pickled with protocol 5)."""
    return _array_from_bytes(buffer, dtype, shape, "F" if _text(order) == "F" else "C")


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``: how Python 3 writes bytes into a protocol-2 pickle."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode with these arguments")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NDArrayName,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _latin1,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names a plain NumPy array is pickled with (to safe stand-ins)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids")


def restricted_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with ``RestrictedUnpickler``; any failure is a ``DataError``."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{source}: unsafe or malformed pickle ({exc})") from None
    except Exception as exc:  # truncated or garbled: EOFError, ValueError, TypeError, ...
        raise DataError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    # Batches are flat: arrays stand at the top level or as values of the top-level dict.
    if isinstance(obj, dict):
        return {_key(k): _unwrap(v, source) for k, v in obj.items()}
    return _unwrap(obj, source)


def _key(key: Any) -> Any:
    text = _text(key)
    return key if text is None else text


def _unwrap(value: Any, source: str) -> Any:
    """An array stand-in's array; anything else unchanged."""
    if not isinstance(value, _Array):
        return value
    if value.array is None:
        raise DataError(f"{source}: an array without its data")
    return value.array


# --- CIFAR batches ------------------------------------------------------------------------------
def parse_batch(
    raw: bytes, source: str, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's bytes -> (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    batch = restricted_loads(raw, source)
    if not isinstance(batch, dict):
        raise DataError(f"{source}: expected a dict of data and labels, got {type(batch).__name__}")
    if "data" not in batch or label_key not in batch:
        found = ", ".join(sorted(str(k) for k in batch)) or "none"
        raise DataError(f"{source}: needs keys 'data' and {label_key!r}, found: {found}")
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{source}: 'data' must be a uint8 array (N, {ROW_BYTES}), got {what}")
    if data.shape[1] != ROW_BYTES:
        raise DataError(
            f"{source}: 'data' rows have {data.shape[1]} values, expected {ROW_BYTES} (3×32×32)"
        )
    if isinstance(labels, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
            raise DataError(f"{source}: {label_key!r} must be a list of integers")
        labels = np.asarray(labels, dtype=np.int64)
    elif not isinstance(labels, np.ndarray):
        raise DataError(f"{source}: {label_key!r} must be a list of integers")
    labels = check_labels(labels, len(data), f"{source} [{label_key}]")
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(
            f"{source}: label {int(labels.max())} out of range, expected 0..{num_classes - 1}"
        )
    return data.reshape(-1, 3, SIDE, SIDE), labels


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or "\\" in member.name:
        raise DataError(f"{archive}: refusing member {member.name!r} (path outside the archive)")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing member {member.name!r} (a link or device file)")


def _read_archive(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """The wanted batch files of a tar(.gz) archive, read in memory after checking every member."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_member(member, archive)
                name = PurePosixPath(member.name)
                if not member.isfile() or name.name not in wanted:
                    continue
                if len(name.parts) > 2 or (
                    len(name.parts) == 2 and name.parts[0] not in ARCHIVE_FOLDERS
                ):
                    continue
                if name.name in found:
                    raise DataError(f"{archive}: holds {name.name} twice")
                if member.size > MAX_BATCH_BYTES:
                    raise DataError(f"{archive}: {member.name} is {member.size} bytes, too large")
                f = tar.extractfile(member)
                found[name.name] = f.read() if f is not None else b""
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        reason = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        raise DataError(f"{archive}: not a readable tar archive ({reason})") from None
    return found


def _read_folder(folder: Path, names: list[str]) -> dict[str, bytes]:
    """Batch files from ``folder`` or from the archive's sub-folder inside it."""
    for candidate in [folder, *(folder / sub for sub in ARCHIVE_FOLDERS)]:
        if any((candidate / n).is_file() for n in names):
            out = {}
            for n in names:
                path = candidate / n
                if path.is_file():
                    if path.stat().st_size > MAX_BATCH_BYTES:
                        raise DataError(
                            f"{path}: {path.stat().st_size} bytes, too large for a batch"
                        )
                    out[n] = path.read_bytes()
            return out
    return {}


def load_cifar(path: Path) -> tuple[ImageSet, ImageSet]:
    """(train, test) from a CIFAR-10 or CIFAR-100 python-batches folder or archive."""
    names = [*CIFAR10_TRAIN, CIFAR10_TEST, CIFAR100_TRAIN, CIFAR100_TEST]
    if path.is_file():
        files, where = _read_archive(path, set(names)), path
    elif path.is_dir():
        files, where = _read_folder(path, names), path
    else:
        raise DataError(f"{path}: no such folder or archive (expected CIFAR python batches)")

    if CIFAR10_TEST in files or any(n in files for n in CIFAR10_TRAIN):
        train_names, test_name, label_key, classes = (
            list(CIFAR10_TRAIN),
            CIFAR10_TEST,
            "labels",
            CIFAR10_CLASSES,
        )
    elif CIFAR100_TRAIN in files or CIFAR100_TEST in files:
        train_names, test_name, label_key, classes = (
            [CIFAR100_TRAIN],
            CIFAR100_TEST,
            "fine_labels",
            None,
        )
    else:
        raise DataError(
            f"{where}: no CIFAR batches (data_batch_1..5 and test_batch, or train and test)"
        )
    missing = [n for n in [*train_names, test_name] if n not in files]
    if missing:
        raise DataError(f"{where}: missing CIFAR batch file(s) {', '.join(missing)}")
    num_classes = len(classes) if classes else 100

    def split(batch_names: list[str]) -> ImageSet:
        parts = [
            parse_batch(files[n], f"{where} [{n}]", label_key, num_classes) for n in batch_names
        ]
        raw = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        images = to_unit_float(as_nchw(raw, str(where)), str(where))
        return ImageSet(images=images, labels=labels, num_classes=num_classes, class_names=classes)

    return split(train_names), split([test_name])


register_scheme(
    Scheme(
        "cifar",
        "DIR",
        path_only(load_cifar),
        about="a CIFAR-10/100 python-batches folder or .tar.gz",
    )
)
