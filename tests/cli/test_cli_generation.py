"""Stage two from the CLI for every model family on tiny data: Transformer priors with
guidance and completion, VQ-VAE-2 (both priors), the Gaussian VAE baseline, and
`vqvae evaluate --samples` (sample_frechet, sample_class_accuracy, a cached classifier)."""

import json

import pytest
import torch
from helpers import write_bar_images
from PIL import Image

from vqvae.cli.main import main
from vqvae.evaluation import scores
from vqvae.training import TrainConfig

TINY = [
    "model.hidden=8",
    "model.res_hidden=4",
    "model.res_blocks=1",
    "train.batch_size=16",
    "train.log_every=5",
]
CODES = ["model.quantizer.codebook_size=8", "model.quantizer.dim=4"]
PRIORS = [
    "prior.channels=8",
    "prior.layers=2",
    "prior.kernel_size=3",
    "prior_train.batch_size=16",
    "transformer.dim=16",
    "transformer.heads=2",
    "transformer.layers=1",
    "bottom_prior.channels=8",
    "bottom_prior.layers=2",
    "bottom_prior.kernel_size=3",
]


@pytest.fixture(autouse=True)
def small_classifier(monkeypatch):
    monkeypatch.setattr(
        scores,
        "IMAGE_CLASSIFIER_TRAIN",
        TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=2),
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory):
    return write_bar_images(tmp_path_factory.mktemp("data"), 90)


def _metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_vqvae_with_a_transformer_prior_guidance_completion_and_sample_quality(
    data_spec, tmp_path, capsys
):
    run = tmp_path / "run"
    argv = ["train", "--data", data_spec, "--out", str(run), "--steps", "10"]
    assert main([*argv, "model.downsample=2", *TINY, *CODES, *PRIORS]) == 0
    # overrides may come after options too
    assert main(["train-prior", str(run), "--steps", "10", "prior_kind=transformer",
                 "transformer.label_dropout=0.2"]) == 0  # fmt: skip
    saved = json.loads((run / "config.json").read_text())
    # release 0.1's spelling (prior_kind, transformer.*) is read as prior.kind = "transformer"
    assert saved["prior"]["kind"] == "transformer" and saved["prior"]["num_classes"] == 3
    assert saved["prior"]["label_dropout"] == 0.2 and "transformer" not in saved
    assert json.loads((run / "prior/model/config.json").read_text())["type"] == "TransformerPrior"

    for extra in (["--guidance-scale", "2"], ["--complete"], ["--no-cache", "--label", "1"]):
        out = tmp_path / "s.png"
        assert main(["sample", str(run), "--n", "3", *extra, "--out", str(out)]) == 0
        assert Image.open(out).size[0] > 0
    for parallel in (["--decode-steps", "4"], ["--confidence-noise", "9"]):  # MaskGIT's only
        capsys.readouterr()
        assert main(["sample", str(run), "--n", "1", *parallel, "--out", str(out)]) == 2
        assert f"{parallel[0]} needs a parallel-decoding prior" in capsys.readouterr().err

    assert main(["evaluate", str(run), "--samples", "12"]) == 0
    m = _metrics(run)
    assert m["sample_frechet"] >= 0 and m["real_frechet"] >= 0 and m["sample_count"] == 12
    assert 0 <= m["sample_class_accuracy"] <= 1
    assert {"prior_nll_bits_per_code", "mse", "classifier_test_accuracy"} <= set(m)
    weights = run / "classifier" / "model.safetensors"
    assert weights.is_file() and (run / "classifier" / "config.json").is_file()
    stamp = weights.stat().st_mtime_ns
    assert main(["evaluate", str(run), "--samples", "12", "--guidance-scale", "1.5"]) == 0
    assert weights.stat().st_mtime_ns == stamp  # the cached classifier was reused
    assert _metrics(run)["sample_guidance_scale"] == 1.5


def test_vqvae2_trains_both_priors_samples_and_evaluates(data_spec, tmp_path):
    run = tmp_path / "run2"
    hier = ["model.kind=vqvae2", "model.top_quantizer.codebook_size=8", "model.top_quantizer.dim=4"]
    argv = ["train", "--data", data_spec, "--out", str(run), "--steps", "10"]
    assert main([*argv, *hier, *TINY, *CODES, *PRIORS]) == 0
    assert main(["train-prior", str(run), "--steps", "10"]) == 0
    for name in ("prior/model", "prior_bottom/model"):
        assert (run / name / "model.safetensors").is_file(), name
    bottom = json.loads((run / "prior_bottom/model/config.json").read_text())["config"]
    assert bottom["cond_codebook_size"] == 8  # conditioned on the top codes
    out = tmp_path / "s2.png"
    assert main(["sample", str(run), "--n", "2", "--out", str(out)]) == 0
    assert main(["sample", str(run), "--n", "2", "--complete", "--out", str(out)]) == 0
    assert main(["evaluate", str(run), "--samples", "10"]) == 0
    m = _metrics(run)
    for key in ("prior_top_nll_bits_per_code", "prior_bottom_nll_bits_per_code",
                "prior_nll_bits_per_dim", "top_perplexity", "sample_frechet"):  # fmt: skip
        assert isinstance(m[key], float), key


def test_gaussian_vae_baseline_samples_and_is_scored(data_spec, tmp_path, capsys):
    run = tmp_path / "vae"
    argv = ["train", "--data", data_spec, "--out", str(run), "--steps", "10", "model.kind=vae"]
    assert main([*argv, "model.downsample=2", "model.latent_dim=4", *TINY]) == 0
    out = tmp_path / "v.png"
    assert main(["sample", str(run), "--n", "4", "--out", str(out)]) == 0
    assert main(["evaluate", str(run), "--samples", "10"]) == 0
    m = _metrics(run)
    assert m["sample_frechet"] >= 0 and "sample_class_accuracy" not in m
    capsys.readouterr()
    assert main(["train-prior", str(run)]) == 2
    assert "no codes" in capsys.readouterr().err


def test_stray_arguments_are_still_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sample", str(tmp_path), "--out", "x.png", "bogus"])
    assert "unrecognized arguments: bogus" in capsys.readouterr().err


def test_model_kind_errors_name_the_key(data_spec, tmp_path, capsys):
    argv = ["train", "--data", data_spec, "--out", str(tmp_path / "x")]
    assert main([*argv, "model.kind=vqvae3"]) == 2
    assert "model.kind" in capsys.readouterr().err
    assert main([*argv, "model.kind=vae", "model.quantizer.dim=4"]) == 2
    assert "unknown key(s) quantizer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
