"""--resume continues on the run's own data; other data only with --allow-other-data (the
refusals, with the run folder byte-identical, are in tests/reliability/test_bad_input_corpus)."""

import json

from helpers import tiny_image_model, write_bar_images

from vqvae.cli.main import main

TINY = [*tiny_image_model(), "train.batch_size=16", "train.checkpoint_every=2"]


def test_allow_other_data_continues_on_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    spec, other = write_bar_images(tmp_path / "a", 40), write_bar_images(tmp_path / "b", 48)
    run = tmp_path / "run"
    assert main(["train", "--data", spec, "--out", str(run), "--steps", "2", *TINY]) == 0
    # the same data, named again or left out, is no change
    assert main(["train", "--data", spec, "--out", str(run), "--resume", "--steps", "3"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--steps", "4"]) == 0
    argv = ["train", "--data", other, "--out", str(run), "--resume", "--steps", "6"]
    assert main(argv) == 2
    assert main([*argv, "--allow-other-data"]) == 0
    assert json.loads((run / "config.json").read_text())["data"] == other


def test_train_without_data_needs_resume(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
