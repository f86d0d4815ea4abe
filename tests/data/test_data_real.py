"""The real MNIST / Fashion-MNIST files in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vqvae.data import load_data
from vqvae.data.download import CHECKSUMS

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_idx_dataset(name: str) -> None:
    folder = SHARED_DATA / name
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared dataset folder {folder} is absent (real {name} files not available)")
    splits = load_data(f"{name}:{folder}")
    assert splits.train.images.shape == (60000, 1, 28, 28)
    assert splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.images.dtype == np.float32
    assert splits.train.images.min() == 0.0 and splits.train.images.max() == 1.0
    for part in (splits.train, splits.test):
        assert part.labels.dtype == np.int64
        assert set(np.unique(part.labels)) == set(range(10))
        assert part.num_classes == 10 and len(part.class_names) == 10
    # Every class appears about equally often in these datasets.
    assert np.bincount(splits.train.labels).min() > 5000


def test_checksums_match_shared_sha256sums() -> None:
    sums = SHARED_DATA / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip(f"{sums} is absent (shared data not available)")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name.lstrip("*")] = digest
    for dataset, table in CHECKSUMS.items():
        for filename, digest in table.items():
            assert listed[f"{dataset}/{filename}"] == digest
