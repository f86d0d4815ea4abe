"""Tiny CIFAR batches written the way the official (Python 2) files are, for the tests."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from vqvae.data.cifar import CIFAR10_TEST, CIFAR10_TRAIN


class Py2Pickler(pickle._Pickler):
    """Protocol 2 with ``bytes`` written as Python 2 ``str`` opcodes and NumPy's module names of
    the time, as in ``cifar-10-python.tar.gz``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "")
        if module.startswith("numpy._core"):
            qualname = name or obj.__qualname__
            old = module.replace("numpy._core", "numpy.core")
            self.write(pickle.GLOBAL + f"{old}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[type(len)] = save_global  # builtin functions such as _reconstruct


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def batch(n: int, seed: int, num_classes: int = 10, label_key: bytes = b"labels") -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar10(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([*CIFAR10_TRAIN, CIFAR10_TEST]):
        (folder / name).write_bytes(py2_pickle(batch(n, i)))
    return folder


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
