"""Lean run folders: RUN/checkpoints keeps train.keep_checkpoints checkpoints (default 1, what
resuming needs); a run config of release 0.1, without that key, still loads."""

import json

import pytest
from helpers import tiny_image_model, write_bar_images

from vqvae.cli.main import main
from vqvae.pipeline.run import RunDir
from vqvae.training import TrainConfig

TINY = [*tiny_image_model(), "train.batch_size=16", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return write_bar_images(tmp_path_factory.mktemp("data"), 40)


@pytest.mark.parametrize(
    ("keep", "kept"), [(None, ["step-00000006"]), (2, ["step-00000004", "step-00000006"])]
)
def test_checkpoints_kept(spec, tmp_path, keep, kept):
    run = tmp_path / "run"
    extra = [] if keep is None else [f"train.keep_checkpoints={keep}"]
    assert main(["train", "--data", spec, "--out", str(run), "--steps", "6", *TINY, *extra]) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == kept
    assert (run / "checkpoints" / "latest").read_text().strip() == kept[-1]
    # resuming from the one kept checkpoint continues the run
    assert main(["train", "--out", str(run), "--resume", "--steps", "8"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*"))[-1] == "step-00000008"


def test_a_config_without_the_key_loads_with_the_default(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"data": "digits", "train": {"steps": 10}, "prior_train": {"steps": 5}})
    )
    config, _ = run.read_config()
    assert config.train.keep_checkpoints == TrainConfig().keep_checkpoints == 1
