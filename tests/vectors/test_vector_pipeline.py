"""Plain vectors through the CLI: npz loading rules, train (model.kind=mlp), evaluate (codes
recover the labelled clusters), encode/decode/reconstruct, and the documented errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vqvae.cli.main import main
from vqvae.data import load_codes
from vqvae.data.vectors import load_vectors
from vqvae.errors import DataError

TINY = [
    "model.kind=mlp",
    "model.hidden=32",
    "model.quantizer.codebook_size=8",
    "model.quantizer.dim=4",
    "train.batch_size=64",
    "train.lr=3e-3",
    "train.warmup_steps=10",
    "train.log_every=50",
    "train.checkpoint_every=0",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8, size=(4, 6))
    labels = rng.integers(0, 4, 500)
    x = centres[labels] + rng.normal(size=(500, 6))
    path = tmp_path_factory.mktemp("vec") / "blobs.npz"
    np.savez(path, vectors=(x * 100).astype(np.float64), labels=labels)
    return path


def test_train_evaluate_encode_decode(npz, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", f"npz:{npz}", "--out", str(run), *TINY, "--steps", "200"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["input_dim"] == 6
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["code_label_nmi"] > 0.8
    assert metrics["probe_label_accuracy"] > 0.95 > 0.5 > metrics["probe_label_chance"]
    assert metrics["bits_per_vector"] == 3.0 and metrics["normalized_mse"] < 0.2
    codes_file = tmp_path / "c.safetensors"
    assert main(["encode", str(run), "--out", str(codes_file), "--split", "test"]) == 0
    codes = load_codes(codes_file)
    assert codes.indices.shape == (50, 1) and codes.labels.shape == (50,)
    assert main(["decode", str(run), "--codes", str(codes_file), "--out", str(tmp_path / "d.npy"),
                 "--n", "5"]) == 0  # fmt: skip
    assert np.load(tmp_path / "d.npy").shape == (5, 6)
    assert main(["reconstruct", str(run), "--out", str(tmp_path / "r.npz"), "--n", "4"]) == 0
    with np.load(tmp_path / "r.npz") as r:
        assert r["original"].shape == r["reconstruction"].shape == (4, 6)
    assert main(["train-prior", str(run), "--steps", "1"]) == 2
    assert main(["sample", str(run), "--out", str(tmp_path / "s")]) == 2


def test_vector_files(tmp_path):
    np.savez(tmp_path / "split.npz", x_train=np.ones((5, 3)), x_test=np.zeros((2, 3)))
    data = load_vectors(f"npz:{tmp_path / 'split.npz'}")
    assert data.features == 3 and len(data.train) == 5 and data.train.labels is None
    np.save(tmp_path / "v.npy", np.arange(40).reshape(20, 2))
    data = load_vectors(f"npy:{tmp_path / 'v.npy'}")
    assert len(data.train) == 18 and data.train.vectors.dtype == np.float32
    bad = {
        "nan.npz": dict(vectors=np.array([[0.0, np.nan], [1, 2]])),
        "3d.npz": dict(vectors=np.zeros((2, 3, 4))),
        "keys.npz": dict(foo=np.zeros((2, 3))),
        "feat.npz": dict(x_train=np.zeros((4, 3)), x_test=np.zeros((2, 2))),
        "lab.npz": dict(vectors=np.zeros((4, 3)), labels=np.array([0, 1])),
    }
    messages = ["non-finite", r"\(N, F\)", "expected arrays", "features", "2 labels for 4"]
    for (name, arrays), message in zip(bad.items(), messages, strict=True):
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(DataError, match=message):
            load_vectors(f"npz:{tmp_path / name}")
    with pytest.raises(DataError, match="mlp"):
        load_vectors("digits")
