"""IDX reader: round trips, every malformed-file error, and fuzzing with random bytes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vqvae.data import DataError, load_data
from vqvae.data.idx import (
    IDX_FILES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    encode_idx,
    parse_idx,
    read_idx,
)


def write_fake_idx_dataset(
    directory: Path, n_train: int = 6, n_test: int = 4, size: int = 5, gz: bool = True
) -> dict[str, np.ndarray]:
    """Write the four IDX files of a tiny random dataset and return the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = encode_idx(array)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_encode_parse_round_trip(dtype: str) -> None:
    array = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
    back = parse_idx(encode_idx(array), "mem")
    assert back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_read_gzip_and_plain_files(tmp_path: Path) -> None:
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    (tmp_path / "a.gz").write_bytes(gzip.compress(encode_idx(array)))
    (tmp_path / "a").write_bytes(encode_idx(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", IMAGES_MAGIC), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a", IMAGES_MAGIC), array)


def test_bad_magic_names_file_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(np.zeros(3, dtype=np.int16))))  # magic 0x0B01
    with pytest.raises(DataError, match=r"bad magic number 2817, expected 2051 \(IDX images\)"):
        read_idx(path, IMAGES_MAGIC, "IDX images")
    with pytest.raises(DataError, match=str(path)):
        read_idx(path, LABELS_MAGIC, "IDX labels")


def test_not_idx_and_unknown_type() -> None:
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x01\x00\x08\x01\x00\x00\x00\x00", "mem")
    with pytest.raises(DataError, match="type code 0x07"):
        parse_idx(b"\x00\x00\x07\x01\x00\x00\x00\x00", "mem")
    with pytest.raises(DataError, match="0 dimensions"):
        parse_idx(b"\x00\x00\x08\x00", "mem")
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00\x00", "mem")


def test_truncated_says_expected_and_actual(tmp_path: Path) -> None:
    data = encode_idx(np.zeros((2, 4, 4), dtype=np.uint8))  # 16 header + 32 bytes
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data[:-5]))
    with pytest.raises(DataError, match=r"truncated, expected 48 bytes .* got 43") as info:
        read_idx(path, IMAGES_MAGIC)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(data[:10], "mem")
    with pytest.raises(DataError, match="trailing bytes, expected 48 bytes .* got 49"):
        parse_idx(data + b"\x00", "mem")


def test_not_gzip_and_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(encode_idx(np.zeros(3, dtype=np.uint8)))  # plain bytes under a .gz name
    with pytest.raises(DataError, match=f"{path}: not a valid gzip file"):
        read_idx(path, LABELS_MAGIC)
    path.write_bytes(gzip.compress(encode_idx(np.zeros(300, dtype=np.uint8)))[:-12])
    with pytest.raises(DataError, match="not a valid gzip file"):
        read_idx(path, LABELS_MAGIC)
    blob = bytearray(gzip.compress(bytes(range(256)) * 20))
    blob[-6] ^= 0xFF  # damage the stored CRC
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="not a valid gzip file"):
        read_idx(path, LABELS_MAGIC)


@pytest.mark.parametrize("gz", [True, False])
def test_load_data_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = write_fake_idx_dataset(tmp_path / "m", gz=gz)
    splits = load_data(f"mnist:{tmp_path / 'm'}")
    assert splits.train.images.shape == (6, 1, 5, 5) and splits.test.images.shape == (4, 1, 5, 5)
    assert splits.train.images.dtype == np.float32
    np.testing.assert_array_equal(
        splits.train.images[:, 0], arrays["train-images-idx3-ubyte"] / np.float32(255)
    )
    np.testing.assert_array_equal(splits.test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert splits.train.labels.dtype == np.int64
    assert splits.train.num_classes == 10 and splits.train.class_names[3] == "3"
    assert (splits.channels, splits.height, splits.width) == (1, 5, 5)


def test_fashion_class_names_and_options(tmp_path: Path) -> None:
    write_fake_idx_dataset(tmp_path)
    splits = load_data(f"fashion-mnist:{tmp_path}", image_size=8, channels=3)
    assert (
        splits.train.class_names[0] == "T-shirt/top" and splits.test.class_names[9] == "Ankle boot"
    )
    assert splits.train.images.shape == (6, 3, 8, 8)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    write_fake_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=f"{tmp_path / 't10k-labels-idx1-ubyte.gz'}: missing"):
        load_data(f"mnist:{tmp_path}")
    with pytest.raises(DataError, match="no such folder"):
        load_data(f"mnist:{tmp_path / 'nope'}")


def test_count_mismatch(tmp_path: Path) -> None:
    write_fake_idx_dataset(tmp_path)
    labels = encode_idx(np.zeros(5, dtype=np.uint8))  # 6 train images
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    with pytest.raises(DataError, match="5 labels for the 6 images"):
        load_data(f"mnist:{tmp_path}")


def test_label_out_of_range_and_empty(tmp_path: Path) -> None:
    write_fake_idx_dataset(tmp_path)
    labels = encode_idx(np.full(6, 10, dtype=np.uint8))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    with pytest.raises(DataError, match="label 10 out of range"):
        load_data(f"mnist:{tmp_path}")
    write_fake_idx_dataset(tmp_path / "empty", n_train=0)
    with pytest.raises(DataError, match="empty"):
        load_data(f"mnist:{tmp_path / 'empty'}")


def test_files_list_is_official() -> None:
    assert IDX_FILES == (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )


def _check_parse(data: bytes) -> None:
    """parse_idx must raise DataError or return an array that re-encodes to the same bytes."""
    try:
        array = parse_idx(data, "fuzz")
    except DataError:
        return
    assert isinstance(array, np.ndarray)
    assert encode_idx(array) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data: bytes) -> None:
    _check_parse(data)


_ITEMSIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from([*_ITEMSIZE, 0x00, 0xFF]),
    dims=st.lists(st.integers(0, 6), min_size=0, max_size=4),
    delta=st.integers(-3, 3),
    data=st.data(),
)
def test_fuzz_plausible_headers(
    code: int, dims: list[int], delta: int, data: st.DataObject
) -> None:
    # Payloads of about the right length, so that valid files are generated too.
    needed = int(np.prod(dims)) * _ITEMSIZE.get(code, 1)
    size = max(0, needed + delta)
    payload = data.draw(st.binary(min_size=size, max_size=size))
    header = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    _check_parse(header + payload)


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=200), cut=st.integers(0, 300), compress=st.booleans())
def test_fuzz_gzip_file(
    tmp_path_factory: pytest.TempPathFactory, payload: bytes, cut: int, compress: bool
) -> None:
    # Random bytes, or gzip streams cut short: read_idx must answer with DataError or an array.
    data = gzip.compress(payload)[:cut] if compress else payload
    path = tmp_path_factory.getbasetemp() / "fuzz-x.gz"
    path.write_bytes(data)
    try:
        array = read_idx(path)
    except DataError:
        return
    assert isinstance(array, np.ndarray)
