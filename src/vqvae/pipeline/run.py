"""A run folder and the configuration it was made with.

RUN/config.json        the resolved configuration (every section, every value) + data spec
RUN/model/             the trained VQ-VAE (config.json + model.safetensors)
RUN/checkpoints/       resumable training state
RUN/log.jsonl          training metrics (and RUN/tensorboard/ when tensorboard is installed)
RUN/codes/             the dataset encoded to indices (train/test .safetensors)
RUN/prior/             the prior: model/, checkpoints/, log.jsonl (VQ-VAE-2: the top prior)
RUN/prior_bottom/      VQ-VAE-2's bottom prior, conditioned on the top codes
RUN/classifier/        the classifier that scores samples (``vqvae evaluate --samples``)
RUN/metrics.json       what ``vqvae evaluate`` measured
RUN/*.png              reconstructions, samples, codebook usage, loss curves
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vqvae import configs
from vqvae.errors import ConfigError, VQVAEError
from vqvae.files import atomic_write_text
from vqvae.models import ModelConfig, VQVAEConfig
from vqvae.priors import PixelCNNConfig, TransformerPriorConfig
from vqvae.training import TrainConfig


def _prior_train_defaults() -> TrainConfig:
    return TrainConfig(steps=5000, batch_size=64, lr=1e-3, warmup_steps=100)


@dataclass
class RunConfig:
    """Everything a run needs. ``prior.codebook_size`` and ``prior.num_classes`` are filled in
    from the trained VQ-VAE and the data, so they need not be set by hand."""

    model: ModelConfig = field(default_factory=VQVAEConfig)  # model.kind: vqvae, vqvae2, vae
    train: TrainConfig = field(default_factory=TrainConfig)
    prior: PixelCNNConfig = field(default_factory=PixelCNNConfig)
    prior_train: TrainConfig = field(default_factory=_prior_train_defaults)
    conditional_prior: bool = True  # condition the prior on labels when the data has them
    prior_kind: Literal["pixelcnn", "transformer"] = "pixelcnn"  # section prior or transformer
    transformer: TransformerPriorConfig = field(default_factory=TransformerPriorConfig)
    bottom_prior: PixelCNNConfig = field(default_factory=PixelCNNConfig)  # VQ-VAE-2 only


def resolve_config(
    config_file: str | Path | None, overrides: list[str], base: dict[str, Any] | None = None
) -> tuple[RunConfig, dict[str, Any]]:
    """Defaults < ``base`` < config file < ``key=value`` overrides. Returns the checked config
    and the merged plain mapping (to tell which keys the user set explicitly)."""
    raw: dict[str, Any] = json.loads(json.dumps(base or {}))
    if config_file is not None:
        raw = _deep_merge(raw, configs.load_file(config_file))
    raw = configs.merge_overrides(raw, overrides)
    where = str(config_file) if config_file is not None else "config"
    return configs.from_dict(RunConfig, raw, where), raw


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


class RunDir:
    """Paths inside a run folder, and its saved configuration."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_file = property(lambda self: self.path / "config.json")
    model_dir = property(lambda self: self.path / "model")
    codes_dir = property(lambda self: self.path / "codes")
    prior_dir = property(lambda self: self.path / "prior")
    prior_model_dir = property(lambda self: self.path / "prior" / "model")
    bottom_prior_dir = property(lambda self: self.path / "prior_bottom")
    bottom_prior_model_dir = property(lambda self: self.path / "prior_bottom" / "model")
    metrics_file = property(lambda self: self.path / "metrics.json")

    def write_config(self, config: RunConfig, data_spec: str) -> None:
        payload = {"data": data_spec, **configs.to_dict(config)}
        atomic_write_text(self.config_file, json.dumps(payload, indent=2) + "\n")

    def read_config(self) -> tuple[RunConfig, str]:
        if not self.config_file.is_file():
            raise VQVAEError(f"{self.path}: not a run folder (no config.json); train one first")
        try:
            raw = json.loads(self.config_file.read_text(encoding="utf-8"))
            data = raw.pop("data")
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ConfigError(f"{self.config_file}: unreadable run config ({e})") from None
        return configs.from_dict(RunConfig, raw, str(self.config_file)), data

    def require_model(self) -> Path:
        if not (self.model_dir / "model.safetensors").is_file():
            raise VQVAEError(
                f"{self.path}: no trained model in {self.model_dir}; run `vqvae train`"
            )
        return self.model_dir

    def require_prior(self) -> Path:
        if not (self.prior_model_dir / "model.safetensors").is_file():
            raise VQVAEError(f"{self.path}: no trained prior; run `vqvae train-prior` first")
        return self.prior_model_dir
