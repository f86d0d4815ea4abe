"""`prior.kind = "maskgit"` from the CLI: train-prior, sample (guidance, --complete), evaluate
(the masked-token cross-entropy at stated mask ratios, no bits-per-code figure) for an image
VQ-VAE and VQ-VAE-2's top level; a codec's likelihood request is refused."""

import json

import pytest
import torch
from helpers import write_bar_images

from vqvae.cli.main import main
from vqvae.errors import VQVAEError
from vqvae.evaluation import scores
from vqvae.pipeline.families import FAMILIES
from vqvae.pipeline.run import RunDir
from vqvae.training import TrainConfig

TINY = [
    "model.hidden=8",
    "model.res_hidden=4",
    "model.res_blocks=1",
    "train.batch_size=16",
    "train.log_every=5",
    "model.quantizer.codebook_size=8",
    "model.quantizer.dim=4",
]
MASKGIT = [
    "prior.kind=maskgit",
    "prior.dim=16",
    "prior.heads=2",
    "prior.layers=1",
    "prior.label_dropout=0.2",
    "prior.decode_steps=3",
    "prior_train.batch_size=16",
]
MASKED_KEYS = {f"masked_bits_per_code_at_{p}" for p in (25, 50, 75, 100)}


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


def test_image_run_with_a_maskgit_prior(data_spec, tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--data", data_spec, "--out", str(run), "--steps", "10"]
    assert main([*argv, "model.downsample=2", *TINY]) == 0
    assert main(["train-prior", str(run), "--steps", "10", *MASKGIT]) == 0
    saved = json.loads((run / "prior/model/config.json").read_text())
    assert saved["type"] == "MaskGITPrior" and saved["config"]["num_classes"] == 3
    assert (run / "samples.png").is_file()  # train-prior's preview
    for extra in (
        ["--guidance-scale", "2", "--decode-steps", "2", "--confidence-noise", "9"],
        ["--complete"],
        ["--label", "1", "--top-k", "3"],
    ):
        assert main(["sample", str(run), "--n", "3", *extra, "--out", str(tmp_path / "s.png")]) == 0

    assert main(["evaluate", str(run), "--samples", "12"]) == 0
    m = _metrics(run)
    assert {f"prior_{k}" for k in MASKED_KEYS} <= set(m)
    assert not any("nll" in k for k in m)  # no likelihood figure is made up
    assert all(0 < m[f"prior_{k}"] < 20 for k in MASKED_KEYS) and m["sample_count"] == 12

    # a codec (anything asking for exact conditional logits) is refused, by name
    family = FAMILIES.get("vqvae")
    model = family.load_model(RunDir(run))
    priors = family.load_priors(RunDir(run), model)
    codes = [torch.zeros(2, *family.code_levels(model)[0].shape, dtype=torch.long)]
    with pytest.raises(VQVAEError, match="prior.kind = 'maskgit' has no exact likelihood"):
        family.prior_logits(model, priors, codes, torch.tensor([0, 1]))


def test_vqvae2_top_level_maskgit_bottom_pixelcnn(data_spec, tmp_path):
    run = tmp_path / "run2"
    hier = ["model.kind=vqvae2", "model.top_quantizer.codebook_size=8", "model.top_quantizer.dim=4"]
    argv = ["train", "--data", data_spec, "--out", str(run), "--steps", "10"]
    assert main([*argv, *hier, *TINY]) == 0
    bottom = ["bottom_prior.channels=8", "bottom_prior.layers=2", "bottom_prior.kernel_size=3"]
    assert main(["train-prior", str(run), "--steps", "10", *MASKGIT, *bottom]) == 0
    assert json.loads((run / "prior/model/config.json").read_text())["type"] == "MaskGITPrior"
    out = tmp_path / "s2.png"
    # --decode-steps goes to the top (MaskGIT) prior only; the bottom PixelCNN draws as always
    assert main(["sample", str(run), "--n", "2", "--decode-steps", "2", "--out", str(out)]) == 0
    assert main(["sample", str(run), "--n", "2", "--complete", "--out", str(out)]) == 0
    assert main(["evaluate", str(run), "--samples", "10"]) == 0
    m = _metrics(run)
    assert {f"prior_top_{k}" for k in MASKED_KEYS} <= set(m)
    assert isinstance(m["prior_bottom_nll_bits_per_code"], float)  # the exact level's NLL
    assert "prior_nll_bits_per_code" not in m and "prior_nll_bits_per_dim" not in m


def test_a_maskgit_bottom_prior_is_refused_by_name(data_spec, tmp_path, capsys):
    run = tmp_path / "run3"
    hier = ["model.kind=vqvae2", "model.top_quantizer.codebook_size=8", "model.top_quantizer.dim=4"]
    argv = ["train", "--data", data_spec, "--out", str(run), "--steps", "2"]
    assert main([*argv, *hier, *TINY]) == 0
    capsys.readouterr()
    assert main(["train-prior", str(run), "--steps", "1", "bottom_prior.kind=maskgit"]) == 2
    assert "cannot be conditioned on a code map" in capsys.readouterr().err
