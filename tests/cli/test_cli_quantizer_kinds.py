"""Every quantizer kind trains end to end from the CLI by changing only the config, and its run
is evaluated with codebook health (usage, perplexity, dead codes)."""

import json

import numpy as np
import pytest
from helpers import tiny_image_model
from safetensors.torch import load_file

from vqvae.cli.main import main

K = 16  # codes (per residual level)
TINY = [
    *tiny_image_model(codebook_size=K),
    "train.batch_size=16",
    "train.checkpoint_every=0",
]

VARIANTS = {
    "vq": ["model.quantizer.kind=vq"],
    "vq-plain": [
        "model.quantizer.kind=vq",
        "model.quantizer.kmeans_init=false",
        "model.quantizer.dead_code_threshold=0",
    ],
    "ema": ["model.quantizer.kind=ema"],
    "cosine": ["model.quantizer.kind=cosine"],
    "lowdim": ["model.quantizer.kind=ema", "model.quantizer.lookup_dim=2"],
    "rotation": ["model.quantizer.kind=vq", "model.quantizer.gradient=rotation"],
    "residual": ["model.quantizer.kind=residual", "model.quantizer.levels=2"],
    "fsq": [
        "model.quantizer.kind=fsq",
        "model.quantizer.fsq_levels=[4, 4]",
        "model.quantizer.codebook_size=16",
    ],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_train_and_evaluate_each_kind(variant, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", "digits", "--out", str(run), "--steps", "3", *TINY]
    assert main([*args, *VARIANTS[variant]]) == 0
    assert (run / "codebook_usage.png").is_file()
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["codebook_usage"] <= 1
    assert metrics["perplexity"] >= 1
    # Dead codes: the codes (per level) that no test item's index map uses, counted here from
    # the codes `vqvae encode` writes for the test split.
    assert main(["encode", str(run), "--split", "test", "--out", str(tmp_path / "codes.st")]) == 0
    indices = load_file(str(tmp_path / "codes.st"))["indices"].numpy()
    per_level = indices.swapaxes(0, 1) if variant == "residual" else indices[None]  # (L, N, ...)
    unused = sum(K - len(np.unique(level)) for level in per_level)
    assert metrics["dead_codes"] == unused
    saved = json.loads((run / "config.json").read_text())["model"]["quantizer"]
    assert saved["kind"] == VARIANTS[variant][0].split("=")[1]
    if variant == "residual":  # health per level, and a clear refusal from the 2D prior
        assert {"level0_codebook_usage", "level1_perplexity", "level1_dead_codes"} <= set(metrics)
        assert main(["train-prior", str(run), "--steps", "1"]) == 2
        assert "residual quantizer" in capsys.readouterr().err


def test_bad_quantizer_option_exits_2_naming_it(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            "digits",
            "--out",
            str(run),
            "--steps",
            "1",
            "model.quantizer.kind=fsq",
            "model.quantizer.codebook_size=600",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "model.quantizer.codebook_size" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
