"""Spec strings, the scikit-learn digits, and the shared conversion helpers."""

from __future__ import annotations

import numpy as np
import pytest

from vqvae.data import DataError, DataSplits, ImageSet, load_data
from vqvae.data.common import (
    as_nchw,
    check_labels,
    convert_channels,
    resize_images,
    split_indices,
    to_unit_float,
)


@pytest.mark.parametrize(
    "spec",
    ["imagenet:/x", "cifar:", "mnist", "mnist:", "folder:", "digits:/x", "", "npz", "/data/x.npz"],
)
def test_unknown_or_incomplete_spec_lists_valid_ones(spec: str) -> None:
    with pytest.raises(DataError, match="unknown data spec") as info:
        load_data(spec)
    forms = ("digits", "mnist:DIR", "fashion-mnist:DIR", "folder:DIR", "npz:FILE", "npy:FILE")
    for form in (*forms, "cifar:DIR"):
        assert form in str(info.value)


@pytest.mark.parametrize("kwargs", [{"channels": 2}, {"channels": True}, {"image_size": 0}])
def test_bad_options(kwargs: dict) -> None:
    with pytest.raises(DataError):
        load_data("digits", **kwargs)


def test_digits_split_is_fixed() -> None:
    a = load_data("digits")
    b = load_data("digits")
    assert isinstance(a, DataSplits) and isinstance(a.train, ImageSet)
    assert len(a.train) == 1497 and len(a.test) == 300
    assert a.train.images.shape[1:] == (1, 8, 8) and a.train.images.dtype == np.float32
    assert a.train.images.min() == 0.0 and a.train.images.max() == 1.0
    assert a.train.num_classes == 10 and a.train.class_names == [str(d) for d in range(10)]
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    # The documented rule: the last 300 of the seed-0 RandomState permutation are the test set.
    from sklearn.datasets import load_digits

    test_idx = np.sort(np.random.RandomState(0).permutation(1797)[-300:])
    np.testing.assert_array_equal(a.test.labels, load_digits().target[test_idx])


def test_digits_resize_and_channels() -> None:
    splits = load_data("digits", image_size=12, channels=3)
    assert splits.train.images.shape[1:] == (3, 12, 12)
    assert (splits.channels, splits.height, splits.width) == (3, 12, 12)
    assert splits.train.images.min() >= 0.0 and splits.train.images.max() <= 1.0


def test_to_unit_float_rules() -> None:
    np.testing.assert_array_equal(to_unit_float(np.array([0, 255], np.uint8), "s"), [0.0, 1.0])
    np.testing.assert_array_equal(to_unit_float(np.array([0, 255], np.int32), "s"), [0.0, 1.0])
    np.testing.assert_array_equal(to_unit_float(np.array([True, False]), "s"), [1.0, 0.0])
    assert to_unit_float(np.array([0.5], np.float64), "s").dtype == np.float32
    with pytest.raises(DataError, match="2 non-finite"):
        to_unit_float(np.array([np.nan, np.inf, 0.5]), "s")
    with pytest.raises(DataError, match="range from -0.5 to 2"):
        to_unit_float(np.array([-0.5, 2.0]), "s")
    with pytest.raises(DataError, match="range from 0 to 256"):
        to_unit_float(np.array([0, 256], np.int64), "s")
    with pytest.raises(DataError, match="not numbers"):
        to_unit_float(np.array(["a"]), "s")


def test_as_nchw_layouts() -> None:
    assert as_nchw(np.zeros((2, 5, 6)), "s").shape == (2, 1, 5, 6)
    assert as_nchw(np.zeros((2, 3, 5, 6)), "s").shape == (2, 3, 5, 6)
    assert as_nchw(np.zeros((2, 5, 6, 3)), "s").shape == (2, 3, 5, 6)
    for shape in [(2, 5), (2, 5, 6, 4), (2, 2, 5, 6, 1), (0, 5, 5)]:
        with pytest.raises(DataError, match="s: image array"):
            as_nchw(np.zeros(shape), "s")


def test_check_labels() -> None:
    assert check_labels(np.array([0, 3], np.uint8), 2, "s").dtype == np.int64
    for labels, match in [
        (np.array([0.0, 1.0]), "expected integers"),
        (np.zeros((2, 1), np.int64), "expected \\(N,\\)"),
        (np.array([0, 1, 2]), "3 labels for 2 images"),
        (np.array([0, -1]), "negative label -1"),
    ]:
        with pytest.raises(DataError, match=match):
            check_labels(labels, 2, "s")


def test_convert_channels() -> None:
    rgb = np.zeros((1, 3, 2, 2), np.float32)
    rgb[0, 0] = 1.0  # pure red
    grey = convert_channels(rgb, 1, "s")
    assert grey.shape == (1, 1, 2, 2) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, 0.299, rtol=1e-6)
    back = convert_channels(grey, 3, "s")
    assert back.shape == (1, 3, 2, 2) and np.all(back == grey)
    assert convert_channels(rgb, 3, "s") is rgb


def test_resize_images() -> None:
    images = np.random.default_rng(0).random((2, 3, 7, 5), dtype=np.float32)
    out = resize_images(images, 4)
    assert out.shape == (2, 3, 4, 4) and out.dtype == np.float32
    assert resize_images(out, 4) is out  # already the right size
    flat = np.full((1, 1, 3, 3), 0.25, np.float32)
    np.testing.assert_allclose(resize_images(flat, 6), 0.25, rtol=1e-6)


def test_split_indices() -> None:
    train, test = split_indices(25, "s")
    assert len(test) == 2 and len(train) == 23
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(25))
    np.testing.assert_array_equal(split_indices(25, "s")[1], test)
    assert len(split_indices(3, "s")[1]) == 1  # at least one test image
    with pytest.raises(DataError, match="too few"):
        split_indices(1, "s")
