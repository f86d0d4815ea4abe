"""An audio run with `prior.kind = "maskgit"`: a bidirectional prior over code sequences
(layout "1d"), sampled in a few steps, evaluated by its masked-token cross-entropy."""

from __future__ import annotations

import json

import pytest
from test_audio_pipeline import fsdd_dir, trained_run  # noqa: F401  (fixtures)

from vqvae.cli.main import main

pytestmark = pytest.mark.usefixtures("small_and_single_threaded")

MASKGIT = [
    "prior.kind=maskgit",
    "prior.dim=16",
    "prior.heads=2",
    "prior.layers=1",
    "prior.label_dropout=0.2",
    "prior_train.batch_size=8",
    "prior_train.checkpoint_every=0",
]


def test_maskgit_prior_over_code_sequences(trained_run, tmp_path):  # noqa: F811
    assert main(["train-prior", str(trained_run), *MASKGIT, "--steps", "10"]) == 0
    saved = json.loads((trained_run / "prior" / "model" / "config.json").read_text())
    assert saved["type"] == "MaskGITPrior"
    assert saved["config"]["layout"] == "1d" and saved["config"]["max_length"] == 64
    out = tmp_path / "samples"
    assert main(["sample", str(trained_run), "--n", "1", "--guidance-scale", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    assert len(list(out.glob("sample_*.wav"))) == 10  # one of every FSDD digit
    assert main(["evaluate", str(trained_run), "--samples", "6"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert "prior_masked_bits_per_code_at_50" in metrics and metrics["sample_class_accuracy"] >= 0
    assert not any("nll" in key for key in metrics)
