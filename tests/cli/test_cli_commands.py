"""Every CLI command end to end on tiny data, and the documented error paths (exit code 2,
one line, nothing half-written)."""

import json
import subprocess
import sys

import pytest
from helpers import tiny_image_model, write_bar_images
from PIL import Image

from vqvae.cli.main import main
from vqvae.data import load_codes

TINY = [
    *tiny_image_model(codebook_size=8),
    "train.batch_size=16",
    "train.log_every=5",
    "train.checkpoint_every=10",
    "prior.channels=8",
    "prior.layers=2",
    "prior.kernel_size=3",
    "prior_train.batch_size=16",
    "prior_train.log_every=5",
]


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory):
    return write_bar_images(tmp_path_factory.mktemp("data"), 80)


@pytest.fixture(scope="module")
def trained_run(data_spec, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", data_spec, "--out", str(run), "--steps", "30", *TINY]) == 0
    return run


def test_train_writes_run_folder(trained_run):
    for name in [
        "config.json",
        "model/config.json",
        "model/model.safetensors",
        "log.jsonl",
        "reconstructions.png",
        "codebook_usage.png",
        "loss_curves.png",
    ]:
        assert (trained_run / name).is_file(), name
    assert (trained_run / "checkpoints" / "latest").is_file()
    saved = json.loads((trained_run / "config.json").read_text())
    assert saved["model"]["image_size"] == 8 and saved["model"]["quantizer"]["codebook_size"] == 8
    rows = [json.loads(line) for line in (trained_run / "log.jsonl").read_text().splitlines()]
    assert {"train/loss", "train/psnr", "train/perplexity", "train/codebook_usage"} <= set(rows[-1])


def test_resume_continues_to_more_steps(trained_run, capsys):
    assert main(["train", "--out", str(trained_run), "--resume", "--steps", "40"]) == 0
    assert "step 40" in capsys.readouterr().out


def test_reconstruct_encode_prior_sample_evaluate(trained_run, data_spec, tmp_path, capsys):
    out = tmp_path / "rec.png"
    assert main(["reconstruct", str(trained_run), "--data", data_spec, "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 0

    codes_path = tmp_path / "codes.safetensors"
    assert main(["encode", str(trained_run), "--data", data_spec, "--out", str(codes_path)]) == 0
    codes = load_codes(codes_path)
    assert codes.indices.shape == (72, 4, 4) and codes.labels is not None
    assert codes.codebook_size == 8

    capsys.readouterr()
    assert main(["train-prior", str(trained_run), "--steps", "20", "prior.dropout=0.5"]) == 0
    printed = capsys.readouterr().out.split("prior, test split:")[1].split()
    trained_nll = float(printed[printed.index("prior_nll_bits_per_code") + 1])
    assert (trained_run / "prior" / "model" / "model.safetensors").is_file()
    # train-prior leaves a preview: 8 samples of each of the data's classes, one row per class
    preview = Image.open(trained_run / "samples.png")
    assert preview.size[0] > preview.size[1] > 0

    samples = tmp_path / "s.png"
    assert (
        main(["sample", str(trained_run), "--n", "3", "--label", "1", "--out", str(samples)]) == 0
    )
    assert Image.open(samples).size[0] > 0
    assert (
        main(
            [
                "sample",
                str(trained_run),
                "--n",
                "2",
                "--temperature",
                "0.5",
                "--top-k",
                "3",
                "--out",
                str(samples),
            ]
        )
        == 0
    )

    assert main(["evaluate", str(trained_run)]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in [
        "mse",
        "psnr",
        "ssim",
        "codebook_usage",
        "perplexity",
        "dead_codes",
        "prior_nll_bits_per_code",
        "prior_nll_bits_per_dim",
    ]:
        assert isinstance(metrics[key], int | float), key
    assert 0 <= metrics["codebook_usage"] <= 1
    # train-prior measured its prior as evaluate does (dropout off), not in training mode
    assert trained_nll == pytest.approx(metrics["prior_nll_bits_per_code"], abs=1e-4)
    assert metrics["prior_nll_bits_per_dim"] == pytest.approx(
        metrics["prior_nll_bits_per_code"] * 16 / 64
    )


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_error_paths(trained_run, data_spec, tmp_path, capsys):
    new = tmp_path / "new"
    assert "unknown data spec" in _error(capsys, ["train", "--data", "bogus", "--out", str(new)])
    assert "unknown key" in _error(
        capsys, ["train", "--data", data_spec, "--out", str(new), "model.sise=2"]
    )
    assert "not divisible" in _error(
        capsys, ["train", "--data", data_spec, "--out", str(new), "model.image_size=9"]
    )
    assert not new.exists()  # nothing half-written
    assert "already holds a run" in _error(
        capsys, ["train", "--data", data_spec, "--out", str(trained_run)]
    )
    assert "not a run folder" in _error(capsys, ["evaluate", str(tmp_path)])
    assert "--label must be in" in _error(
        capsys, ["sample", str(trained_run), "--label", "7", "--out", str(tmp_path / "x.png")]
    )
    err = _error(capsys, ["train", "--data", f"mnist:{tmp_path}", "--out", str(new)])
    assert "train-images-idx3-ubyte.gz: missing" in err


def test_sample_without_prior_is_an_error(data_spec, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--data", data_spec, "--out", str(run), "--steps", "2", *TINY]) == 0
    capsys.readouterr()  # drop the training progress bar
    assert "no trained prior" in _error(
        capsys, ["sample", str(run), "--out", str(tmp_path / "s.png")]
    )


def test_console_script_help_and_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vqvae.cli.main", "evaluate", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for cmd in ["demo", "train", "reconstruct", "encode", "train-prior", "sample", "evaluate"]:
        assert main_help(cmd)


def main_help(cmd: str) -> bool:
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    return e.value.code == 0
