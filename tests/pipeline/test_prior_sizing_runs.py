"""`train-prior` without prior sizes trains a prior sized to the run's codes and records the
sizes it chose in RUN/config.json and the prior's own config; a run whose config sets sizes
(any run of release 0.1, which wrote every size out) keeps them."""

import json
import shutil
from pathlib import Path

import pytest
from helpers import tiny_image_model, write_bar_images

from vqvae.cli.main import main
from vqvae.priors.pixelcnn import fitted_sizes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs-v0.1"
SIZES = ("channels", "layers", "kernel_size")

pytestmark = pytest.mark.usefixtures("one_thread")


def _prior_sections(run: Path) -> tuple[dict, dict]:
    saved = json.loads((run / "config.json").read_text())["prior"]
    model = json.loads((run / "prior" / "model" / "config.json").read_text())
    return saved, model["config"]


def test_train_prior_records_the_sizes_it_fitted(tmp_path):
    spec = write_bar_images(tmp_path, 40)
    run = tmp_path / "run"
    argv = ["train", "--data", spec, "--out", str(run), "--steps", "3"]
    assert main([*argv, *tiny_image_model(8), "train.batch_size=16"]) == 0
    before = json.loads((run / "config.json").read_text())["prior"]
    assert all(before[name] is None for name in SIZES)  # not decided until the codes exist
    assert main(["train-prior", str(run), "--steps", "2", "prior_train.batch_size=16"]) == 0
    saved, model = _prior_sections(run)
    expected = fitted_sizes((4, 4), 8)  # 8×8 images, downsample 2, K = 8
    assert {name: saved[name] for name in SIZES} == expected
    assert {name: model[name] for name in SIZES} == expected
    # Set sizes are kept, the others fitted.
    assert main(["train-prior", str(run), "--steps", "2", "prior.layers=5",
                 "prior_train.batch_size=16"]) == 0  # fmt: skip
    saved, model = _prior_sections(run)
    assert saved["layers"] == model["layers"] == 5 and saved["channels"] == expected["channels"]


def test_an_old_run_keeps_its_prior_sizes(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "img-pixelcnn", run)
    old = json.loads((run / "config.json").read_text())["prior"]
    assert main(["train-prior", str(run), "--steps", "2"]) == 0
    saved, model = _prior_sections(run)
    assert {name: saved[name] for name in SIZES} == {name: old[name] for name in SIZES}
    assert {name: model[name] for name in SIZES} == {"channels": 16, "layers": 2, "kernel_size": 3}
