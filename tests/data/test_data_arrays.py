"""npz:FILE / npy:FILE specs: layouts, value rules and every rejected array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vqvae.data import DataError, load_data

RNG = np.random.default_rng(0)


def test_official_split_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x_train = RNG.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)  # NHWC
    x_test = RNG.integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    np.savez(path, x_train=x_train, x_test=x_test, y_train=[0, 1, 2, 0, 1], y_test=[4, 0])
    splits = load_data(f"npz:{path}")
    assert splits.train.images.shape == (5, 3, 6, 7) and splits.test.images.shape == (2, 3, 6, 7)
    np.testing.assert_array_equal(
        splits.train.images, x_train.transpose(0, 3, 1, 2) / np.float32(255)
    )
    assert splits.train.labels.dtype == np.int64 and splits.test.labels.tolist() == [4, 0]
    assert splits.train.num_classes == 5 == splits.test.num_classes
    grey = load_data(f"npz:{path}", channels=1, image_size=4)
    assert grey.train.images.shape == (5, 1, 4, 4)


def test_images_key_split_and_value_types(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    images = RNG.random((20, 1, 4, 4)).astype(np.float32)  # NCHW floats in [0, 1]
    np.savez_compressed(path, images=images, labels=np.arange(20) % 3)
    splits = load_data(f"npz:{path}")
    assert len(splits.train) == 18 and len(splits.test) == 2
    assert splits.train.num_classes == 3 and splits.train.labels is not None
    for dtype in (np.bool_, np.uint16, np.int32):
        np.savez(path, images=np.ones((4, 3, 3), dtype=dtype))
        assert load_data(f"npz:{path}").train.images.max() == (
            1.0 if dtype is np.bool_ else 1 / 255
        )


def test_npy_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, RNG.integers(0, 256, (10, 5, 5), dtype=np.uint8))
    splits = load_data(f"npy:{path}")
    assert splits.train.labels is None and splits.train.num_classes is None
    assert len(splits.train) == 9 and splits.train.images.shape[1:] == (1, 5, 5)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"images": np.array([[[np.nan, 0.5]]] * 3)}, "3 non-finite pixel values"),
        ({"images": np.full((3, 2, 2), 1.5)}, "float pixel values range from 1.5 to 1.5"),
        ({"images": np.full((3, 2, 2), 300, np.int32)}, "range from 300 to 300"),
        ({"images": np.zeros((3, 2, 2, 2))}, "image array has shape \\(3, 2, 2, 2\\)"),
        ({"images": np.zeros((3, 4))}, "image array has shape"),
        ({"images": np.zeros((0, 4, 4))}, "empty"),
        ({"images": np.zeros((3, 2, 2)), "labels": np.zeros(3)}, "expected integers"),
        ({"images": np.zeros((3, 2, 2)), "labels": np.array([0, -1, 0])}, "negative label"),
        ({"images": np.zeros((3, 2, 2)), "labels": np.array([0, 1])}, "2 labels for 3 images"),
        ({"x_train": np.zeros((3, 2, 2)), "x_test": np.zeros((1, 3, 3))}, "x_test images are"),
        ({"x_train": np.zeros((3, 2, 2)), "x_test": np.zeros((0, 2, 2))}, "empty"),
        (
            {"x_train": np.zeros((3, 2, 2)), "x_test": np.zeros((1, 2, 2)), "y_train": [0, 0, 0]},
            "only one of y_train and y_test",
        ),
        ({"x_train": np.zeros((3, 2, 2))}, "found: x_train"),
        ({"pictures": np.zeros((3, 2, 2))}, "expected arrays x_train and x_test"),
        ({"images": np.full((3, 2, 2), "a")}, "not numbers"),
        ({"images": np.zeros((1, 2, 2))}, "too few"),
    ],
)
def test_rejected_arrays_name_the_file(tmp_path: Path, arrays: dict, match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as info:
        load_data(f"npz:{path}")
    assert str(path) in str(info.value)


def test_object_arrays_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([np.zeros(2), None], dtype=object))
    with pytest.raises(DataError, match=f"{path}: holds object"):
        load_data(f"npz:{path}")
    npy = tmp_path / "obj.npy"
    np.save(npy, np.array([1, "x", None], dtype=object))
    with pytest.raises(DataError, match="holds object"):
        load_data(f"npy:{npy}")


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_data(f"npz:{tmp_path / 'missing.npz'}")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage, not numpy")
    with pytest.raises(DataError, match=f"{bad}: not a .npy or .npz file"):
        load_data(f"npz:{bad}")
    good = tmp_path / "good.npz"
    np.savez(good, images=np.zeros((4, 2, 2)))
    bad.write_bytes(good.read_bytes()[:-30])  # zip with a damaged central directory
    with pytest.raises(DataError, match="not a readable"):
        load_data(f"npz:{bad}")
