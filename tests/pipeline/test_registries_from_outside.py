"""A model family and a prior defined here, registered through the public registries alone
(no edit anywhere in the package), run train → encode → train-prior → sample → evaluate
through the ``vqvae`` command's entry point."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqvae import configs
from vqvae.cli.main import main
from vqvae.data import load_codes, load_data
from vqvae.models import MODELS
from vqvae.pipeline.families import FAMILIES, CodeLevel, ModelFamily
from vqvae.priors import PRIORS, AutoregressivePrior
from vqvae.serialization import Pretrained


# --- a toy model: 2×2 average pooling quantized to K grey levels --------------------------------
@dataclass
class PoolConfig:
    kind: Literal["pool"] = "pool"
    levels: int = 8  # K
    image_size: int | None = None  # taken from the data


class PoolModel(Pretrained, nn.Module):
    config_class = PoolConfig

    def __init__(self, config: PoolConfig) -> None:
        super().__init__()
        self.config = config
        self.gain = nn.Parameter(torch.ones(()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, H/2, W/2)
        k = self.config.levels - 1
        return (F.avg_pool2d(x, 2)[:, 0] * k).round().long().clamp(0, k)

    def decode_indices(self, idx: torch.Tensor) -> torch.Tensor:  # -> (B, 1, H, W)
        grey = idx.float()[:, None] / (self.config.levels - 1) * self.gain
        return F.interpolate(grey, scale_factor=2)

    def training_losses(self, batch) -> dict[str, torch.Tensor]:
        x = batch[0]
        return {"loss": F.mse_loss(self.decode_indices(self.encode(x)), x)}


class PoolFamily(ModelFamily):
    kind = "pool"
    title = "pooling"
    loss_keys = ("train/loss",)

    def load_data(self, spec, model_config):
        return load_data(spec, channels=1)

    def fit_config(self, spec, config):
        data = self.load_data(spec, config.model)
        model = configs.replace(config.model, "model", image_size=data.height)
        return configs.replace(config, "config", model=model), data

    def inputs(self, part, model=None):
        return part.images

    def code_levels(self, model):
        side = model.config.image_size // 2
        return [CodeLevel("", model.config.levels, (side, side))]

    def fidelity(self, model, part, outputs):
        return {"mse": float(((outputs - part.images) ** 2).mean())}

    def save_outputs(self, model, out, rows):
        with open(out, "wb") as f:
            np.savez(f, **rows)
        return Path(out)

    def score_samples(self, run, model, samples, labels, data, classifier_dir, seed):
        return {"sample_mean": float(samples.mean())}


# --- a toy prior: each code depends on the one before it (and the class, first) ----------------
@dataclass
class BigramConfig:
    kind: Literal["bigram"] = "bigram"
    codebook_size: int = 8
    num_classes: int = 0
    label_dropout: float = 0.0


class BigramPrior(Pretrained, AutoregressivePrior):
    config_class = BigramConfig

    def __init__(self, config: BigramConfig) -> None:
        super().__init__()
        self.config = config
        k = config.codebook_size
        self.first = nn.Embedding(max(1, self.label_rows), k)
        self.next = nn.Embedding(k, k)

    def _start(self, labels, batch: int) -> torch.Tensor:
        labels = self._check_labels(labels, batch)
        return self.first(torch.zeros(batch, dtype=torch.long) if labels is None else labels)

    def forward(self, indices, labels=None, cond=None):  # (B, *grid) -> (B, K, *grid)
        grid = self._check_indices(indices)
        flat = indices.reshape(len(indices), -1).long()
        logits = torch.cat([self._start(labels, len(flat))[:, None], self.next(flat[:, :-1])], 1)
        return logits.transpose(1, 2).reshape(len(flat), -1, *grid)

    def _check_grid(self, grid):
        return grid

    def _decoder(self, batch, grid, labels, cond, cached):
        prior = self

        class Decoder:
            def logits(self, codes, t):
                return prior._start(labels, batch) if t == 0 else prior.next(codes[:, t - 1])

        return Decoder()


@pytest.fixture
def registered():
    MODELS.register("pool", PoolModel)
    FAMILIES.register("pool", PoolFamily())
    PRIORS.register("bigram", BigramPrior)
    yield
    MODELS.unregister("pool")
    FAMILIES.unregister("pool")
    PRIORS.unregister("bigram")


def test_a_family_and_a_prior_registered_from_outside_run_the_whole_pipeline(registered, tmp_path):
    run = tmp_path / "run"
    train = ["train", "--data", "digits", "--out", str(run), "--steps", "5", "model.kind=pool"]
    assert main([*train, "train.batch_size=16"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["image_size"] == 8
    assert (run / "loss_curves.png").is_file() and (run / "codebook_usage.png").is_file()

    codes = tmp_path / "codes.safetensors"
    assert main(["encode", str(run), "--out", str(codes), "--split", "test"]) == 0
    assert load_codes(codes).indices.shape == (300, 4, 4)

    assert main(["train-prior", str(run), "--steps", "60", "prior.kind=bigram",
                 "prior_train.batch_size=64", "prior_train.lr=0.1",
                 "prior_train.warmup_steps=0"]) == 0  # fmt: skip
    saved = json.loads((run / "config.json").read_text())
    assert saved["prior"] == {"kind": "bigram", "codebook_size": 8, "num_classes": 10,
                              "label_dropout": 0.0}  # fmt: skip
    assert json.loads((run / "prior/model/config.json").read_text())["type"] == "BigramPrior"

    out = tmp_path / "samples.npz"
    assert main(["sample", str(run), "--n", "3", "--label", "7", "--out", str(out)]) == 0
    assert np.load(out)["sample_7"].shape == (3, 1, 8, 8)

    assert main(["evaluate", str(run), "--samples", "20"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["mse"] < 0.2 and metrics["codebook_size"] == 8
    assert 0 < metrics["prior_nll_bits_per_code"] < 3.0  # below the uniform 3 bits
    assert metrics["sample_count"] == 20 and 0 <= metrics["sample_mean"] <= 1


def test_an_unregistered_kind_is_refused_listing_the_known_ones(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "r"), "model.kind=pool"]) == 2
    err = capsys.readouterr().err
    assert "model.kind: unknown model family 'pool'; known: vqvae, vqvae2, vae, audio, mlp" in err
    assert not (tmp_path / "r").exists()
