"""CIFAR python batches: read correctly (Python 2 pickles as shipped, and Python 3 ones), from a
folder or a .tar.gz read in memory; a pickle naming anything but a plain array is refused before
it can run, and an archive with a path-traversal member, a link or a device is refused."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from cifar_fixtures import batch, py2_pickle, write_archive, write_cifar10

from vqvae.data import DataError, load_data
from vqvae.data.cifar import CIFAR10_CLASSES, CIFAR10_TEST, CIFAR10_TRAIN, restricted_loads


def test_cifar10_folder_loads_with_the_channel_layout_of_the_format(tmp_path):
    write_cifar10(tmp_path, n=4)
    data = load_data(f"cifar:{tmp_path}")
    assert data.train.images.shape == (20, 3, 32, 32) and data.test.images.shape == (4, 3, 32, 32)
    assert data.train.class_names == CIFAR10_CLASSES and data.train.num_classes == 10
    first = batch(4, 0)
    # Row layout: 1024 red values (row-major 32×32), then green, then blue.
    red = first[b"data"][1, :1024].reshape(32, 32) / np.float32(255)
    blue = first[b"data"][1, 2048:].reshape(32, 32) / np.float32(255)
    np.testing.assert_array_equal(data.train.images[1, 0], red)
    np.testing.assert_array_equal(data.train.images[1, 2], blue)
    assert data.train.labels[:4].tolist() == first[b"labels"]
    assert data.test.labels.tolist() == batch(4, 5)[b"labels"]


def test_archive_is_read_in_memory_like_the_folder(tmp_path):
    folder = write_cifar10(tmp_path / "plain")
    members = {
        f"cifar-10-batches-py/{n}": (folder / n).read_bytes()
        for n in [*CIFAR10_TRAIN, CIFAR10_TEST]
    }
    members["cifar-10-batches-py/readme.html"] = b"<html/>"
    archive = write_archive(tmp_path / "cifar-10-python.tar.gz", members)
    before = set(tmp_path.rglob("*"))
    from_archive = load_data(f"cifar:{archive}")
    assert set(tmp_path.rglob("*")) == before  # nothing extracted
    from_folder = load_data(f"cifar:{folder}")
    np.testing.assert_array_equal(from_archive.train.images, from_folder.train.images)
    np.testing.assert_array_equal(from_archive.test.labels, from_folder.test.labels)
    # ...and a folder holding the archive's sub-folder works too.
    write_cifar10(tmp_path / "outer" / "cifar-10-batches-py")
    assert len(load_data(f"cifar:{tmp_path / 'outer'}").train) == 20


def test_cifar100_uses_the_fine_labels(tmp_path):
    for name, seed in (("train", 0), ("test", 1)):
        b = batch(6, seed, num_classes=100, label_key=b"fine_labels")
        b[b"coarse_labels"] = [0] * 6
        (tmp_path / name).write_bytes(pickle.dumps(b, protocol=4))  # a Python 3 re-save
    data = load_data(f"cifar:{tmp_path}")
    assert data.train.num_classes == 100 and len(data.test) == 6
    assert data.train.labels.tolist() == batch(6, 0, 100, b"fine_labels")[b"fine_labels"]


class _Gadget:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "make",
    [
        lambda marker: _Gadget(os.system, f"touch {marker}"),
        lambda marker: _Gadget(exec, f"open({str(marker)!r}, 'w').close()"),
        lambda marker: _Gadget(eval, f"open({str(marker)!r}, 'w')"),
        lambda marker: _Gadget(open, str(marker), "w"),
        lambda marker: _Gadget(getattr, "text", "upper"),
        lambda marker: _Gadget(np.load, str(marker)),
        lambda marker: np.array([{"x": 1}], dtype=object),  # an object array: arbitrary objects
        lambda marker: np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]),  # a structured dtype
        lambda marker: np.ma.masked_array([1, 2]),  # an ndarray subclass
    ],
    ids=[
        "os.system",
        "exec",
        "eval",
        "open",
        "getattr",
        "numpy.load",
        "object-array",
        "structured-dtype",
        "ndarray-subclass",
    ],
)
def test_a_pickle_naming_anything_but_a_plain_array_is_refused(tmp_path, make):
    marker = tmp_path / "pwned"
    payload = {b"data": make(marker), b"labels": [0]}
    (tmp_path / CIFAR10_TEST).write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match="unsafe or malformed pickle|refusing"):
        restricted_loads((tmp_path / CIFAR10_TEST).read_bytes(), "batch")
    assert not marker.exists()


def test_codecs_encode_is_only_allowed_for_latin1():
    evil = pickle.dumps(b"x", protocol=2).replace(b"latin1", b"zlib00")  # same length
    with pytest.raises(DataError, match="refusing _codecs.encode"):
        restricted_loads(evil, "batch")


@pytest.mark.parametrize(
    "name, kind",
    [
        ("../evil", tarfile.REGTYPE),
        ("cifar-10-batches-py/../../evil", tarfile.REGTYPE),
        ("/tmp/evil", tarfile.REGTYPE),
        ("cifar-10-batches-py/data_batch_1", tarfile.SYMTYPE),
        ("cifar-10-batches-py/data_batch_2", tarfile.LNKTYPE),
        ("cifar-10-batches-py/fifo", tarfile.FIFOTYPE),
    ],
)
def test_archive_members_outside_the_archive_links_or_devices_are_refused(tmp_path, name, kind):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        data = py2_pickle(batch(2, 0))
        if kind == tarfile.REGTYPE:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    before = set(tmp_path.parent.rglob("*"))
    with pytest.raises(DataError, match="refusing member"):
        load_data(f"cifar:{archive}")
    assert set(tmp_path.parent.rglob("*")) == before
