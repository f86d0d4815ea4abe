"""Run folders written by release 0.1 (before the family and prior registries; see
tests/fixtures/runs-v0.1/README.md) load, evaluate and sample with today's code, giving the
metrics and the sample grid that release gave."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqvae.cli.main import main
from vqvae.pipeline.run import RunDir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs-v0.1"
RUNS = ["img-pixelcnn", "img-transformer", "vq2"]


@pytest.fixture
def old_run(request, tmp_path) -> Path:
    run = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, run)
    return run


@pytest.mark.parametrize("old_run", RUNS, indirect=True)
def test_old_run_evaluates_to_the_metrics_it_had(old_run):
    assert main(["evaluate", str(old_run)]) == 0
    now = json.loads((old_run / "metrics.json").read_text())
    then = json.loads((FIXTURES / f"{old_run.name}.metrics.json").read_text())
    assert now.keys() >= then.keys()
    for key, value in then.items():
        expected = value if isinstance(value, str) else pytest.approx(value, rel=1e-6, abs=1e-9)
        assert now[key] == expected, key


@pytest.mark.parametrize("old_run", RUNS, indirect=True)
def test_old_run_samples_the_grid_it_drew(old_run, tmp_path):
    out = tmp_path / "samples.png"
    assert main(["sample", str(old_run), "--n", "2", "--seed", "0", "--out", str(out)]) == 0
    then = np.asarray(Image.open(FIXTURES / f"{old_run.name}.sample.png"))
    assert np.array_equal(np.asarray(Image.open(out)), then)


def test_old_configs_read_as_a_tagged_prior():
    config, spec = RunDir(FIXTURES / "img-transformer").read_config()
    assert spec == "digits" and config.prior.kind == "transformer"
    assert config.prior.dim == 16 and config.prior.label_dropout == 0.1
    config, _ = RunDir(FIXTURES / "img-pixelcnn").read_config()
    assert config.prior.kind == "pixelcnn" and config.prior.channels == 16
    config, _ = RunDir(FIXTURES / "vq2").read_config()
    assert config.bottom_prior.kind == "pixelcnn" and config.bottom_prior.cond_codebook_size == 8


def test_an_old_run_resumes_its_prior_training_with_the_new_spelling(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "img-pixelcnn", run)
    assert main(["train-prior", str(run), "--steps", "2", "prior.kind=transformer",
                 "prior.dim=16", "prior.heads=2", "prior.layers=1"]) == 0  # fmt: skip
    saved = json.loads((run / "config.json").read_text())
    assert saved["prior"]["kind"] == "transformer" and "channels" not in saved["prior"]
    assert "prior_kind" not in saved and "transformer" not in saved
