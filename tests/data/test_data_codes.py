"""Codes files: save -> load round trips and every rejected file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from vqvae.data import Codes, DataError, load_codes, save_codes
from vqvae.data.codes import CODES_FORMAT


def test_round_trip_with_labels_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "codes.safetensors"
    indices = np.random.default_rng(0).integers(0, 512, (7, 4, 4))
    labels = np.arange(7) % 3
    meta = {"model": "runs/x", "grid": [4, 4], "split": "train"}
    save_codes(path, indices, labels, 512, meta)
    codes = load_codes(path)
    assert isinstance(codes, Codes) and len(codes) == 7
    assert codes.indices.dtype == np.int64 and codes.labels.dtype == np.int64
    np.testing.assert_array_equal(codes.indices, indices)
    np.testing.assert_array_equal(codes.labels, labels)
    assert codes.codebook_size == 512 and codes.meta == meta
    stored = safetensors.numpy.load_file(path)
    assert stored["indices"].dtype == np.int32  # stored small
    assert sorted(p.name for p in path.parent.iterdir()) == ["codes.safetensors"]  # no temp left


def test_round_trip_without_labels_or_meta(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_codes(str(path), np.zeros((3, 2), np.uint8), None, 1)
    codes = load_codes(str(path))
    assert codes.labels is None and codes.meta == {} and codes.indices.shape == (3, 2)


@pytest.mark.parametrize(
    ("indices", "labels", "size", "match"),
    [
        (np.array([[0, 4]]), None, 4, "outside \\[0, 4\\)"),
        (np.array([[-1, 0]]), None, 4, "outside"),
        (np.zeros((2, 2)), None, 4, "expected integers"),
        (np.zeros((2, 2), np.int64), np.zeros(3, np.int64), 4, "3 labels for 2 codes"),
        (np.zeros((2, 2), np.int64), np.zeros(2), 4, "labels must be 1-D integers"),
        (np.zeros((2, 2), np.int64), None, 0, "positive integer"),
    ],
)
def test_save_rejects_bad_input(tmp_path: Path, indices, labels, size, match) -> None:
    path = tmp_path / "c.safetensors"
    with pytest.raises(DataError, match=match):
        save_codes(path, indices, labels, size)
    assert not path.exists()
    with pytest.raises(DataError, match="JSON"):
        save_codes(path, np.zeros((1, 1), np.int64), None, 2, {"x": object()})


def _write_raw(path: Path, tensors: dict, metadata: dict | None) -> None:
    path.write_bytes(safetensors.numpy.save(tensors, metadata=metadata))


@pytest.mark.parametrize(
    ("tensors", "metadata", "match"),
    [
        (
            {"indices": np.array([[0, 9]], np.int32)},
            {"format": CODES_FORMAT, "codebook_size": "8", "meta": "{}"},
            "indices range from 0 to 9, outside \\[0, 8\\)",
        ),
        ({"labels": np.zeros(1, np.int64)}, {"format": CODES_FORMAT}, "no 'indices' tensor"),
        ({"indices": np.zeros((1, 1), np.int32)}, None, "not a codes file"),
        (
            {"indices": np.zeros((1, 1), np.int32)},
            {"format": CODES_FORMAT, "codebook_size": "many"},
            "bad codes metadata",
        ),
        (
            {"indices": np.zeros((1, 1), np.int32)},
            {"format": CODES_FORMAT, "codebook_size": "4", "meta": "[1]"},
            "not a JSON object",
        ),
        (
            {"indices": np.zeros((2, 1), np.int32), "labels": np.zeros(3, np.int64)},
            {"format": CODES_FORMAT, "codebook_size": "4"},
            "3 labels for 2 codes",
        ),
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, tensors, metadata, match) -> None:
    path = tmp_path / "c.safetensors"
    _write_raw(path, tensors, metadata)
    with pytest.raises(DataError, match=match) as info:
        load_codes(path)
    assert str(path) in str(info.value)


def test_load_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such codes file"):
        load_codes(tmp_path / "missing.safetensors")
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match=f"{path}: not a readable codes"):
        load_codes(path)
    save_codes(path, np.zeros((4, 4), np.int64), None, 4)
    path.write_bytes(path.read_bytes()[:-5])  # truncated tensor data
    with pytest.raises(DataError, match="not a readable codes"):
        load_codes(path)
