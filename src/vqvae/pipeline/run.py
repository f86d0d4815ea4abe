"""A run folder and the configuration it was made with.

RUN/config.json        the resolved configuration (every section, every value) + data spec
RUN/model/             the trained model (config.json + model.safetensors)
RUN/checkpoints/       resumable training state
RUN/log.jsonl          training metrics (and RUN/tensorboard/ when tensorboard is installed)
RUN/codes/             the dataset encoded to indices (<split>.safetensors; VQ-VAE-2:
                       <split>-top / <split>-bottom)
RUN/prior/             the prior: model/, checkpoints/, log.jsonl (VQ-VAE-2: the top prior)
RUN/prior_bottom/      VQ-VAE-2's bottom prior, conditioned on the top codes
RUN/classifier/        the classifier that scores samples (``vqvae evaluate --samples``)
RUN/metrics.json       what ``vqvae evaluate`` measured
RUN/*.png              reconstructions, samples, codebook usage, loss curves
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from vqvae import configs
from vqvae.configs import Tagged
from vqvae.data import default_model_kind
from vqvae.errors import ConfigError, VQVAEError
from vqvae.files import atomic_write_text
from vqvae.models import MODELS, VQVAEConfig
from vqvae.pipeline.sections import PRIOR_SECTIONS
from vqvae.priors import PRIORS, PixelCNNConfig
from vqvae.training import TrainConfig


def _prior_train_defaults() -> TrainConfig:
    return TrainConfig(steps=5000, batch_size=64, lr=1e-3, warmup_steps=100)


@dataclass
class RunConfig:
    """Everything a run needs. ``model.kind`` picks the model family and ``prior.kind`` the
    prior, each from its registry (``vqvae.models.MODELS``, ``vqvae.priors.PRIORS``). Fields a
    section leaves None (the model's input shape, the data variance) are taken from the data,
    and the prior's vocabulary and classes from the trained model and the data."""

    model: Annotated[Any, Tagged(MODELS, "vqvae")] = field(default_factory=VQVAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior: Annotated[Any, Tagged(PRIORS, "pixelcnn")] = field(default_factory=PixelCNNConfig)
    prior_train: TrainConfig = field(default_factory=_prior_train_defaults)
    conditional_prior: bool = True  # condition the prior on labels when the data has them
    # VQ-VAE-2's bottom prior, conditioned on the top codes (a kind that supports that).
    bottom_prior: Annotated[Any, Tagged(PRIORS, "pixelcnn")] = field(default_factory=PixelCNNConfig)


def resolve_config(
    config_file: str | Path | None,
    overrides: list[str],
    base: dict[str, Any] | None = None,
    *,
    data: str | None = None,
) -> RunConfig:
    """Defaults < the model family the ``data`` spec selects (audio data: the audio model) <
    ``base`` < config file < ``key=value`` overrides, checked."""
    raw: dict[str, Any] = {}
    if data is not None and (kind := default_model_kind(data)) is not None:
        raw = {"model": {"kind": kind}}
    raw = _deep_merge(raw, json.loads(json.dumps(base or {})))
    if config_file is not None:
        raw = _deep_merge(raw, configs.load_file(config_file))
    raw = configs.merge_overrides(raw, overrides)
    where = str(config_file) if config_file is not None else "config"
    return configs.from_dict(RunConfig, upgrade(raw), where)


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """A config mapping of release 0.1 in today's form: its ``prior_kind`` and the
    ``transformer`` section beside ``prior`` become one ``prior`` section with a ``kind``.
    Audio runs always used the ``transformer`` section, whatever ``prior_kind`` said."""
    if "prior_kind" not in raw and "transformer" not in raw:
        return raw
    raw = dict(raw)
    model = raw.get("model")
    audio = isinstance(model, dict) and model.get("kind") == "audio"
    kind = raw.pop("prior_kind", None)
    transformer = raw.pop("transformer", None)
    if audio or kind == "transformer":
        raw["prior"] = {
            **(transformer if isinstance(transformer, dict) else {}),
            "kind": "transformer",
        }
    elif kind is not None:
        prior = raw.get("prior")
        raw["prior"] = {**(prior if isinstance(prior, dict) else {}), "kind": kind}
    return raw


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def with_prior_settings(config: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """``config`` with the prior sections of ``settings`` (a plain mapping, from `train-prior`'s
    config file and overrides) applied. A section whose ``kind`` changes starts from that
    kind's defaults rather than from the other kind's settings."""
    settings = upgrade(settings)
    merged = configs.to_dict(config)
    for section, values in settings.items():
        if section not in PRIOR_SECTIONS:
            raise ConfigError(
                f"train-prior: cannot change {section!r} (only {', '.join(PRIOR_SECTIONS)})"
            )
        current = merged[section]
        if isinstance(values, dict) and isinstance(current, dict):
            if values.get("kind", current.get("kind")) != current.get("kind"):
                current = {}
            merged[section] = {**current, **values}
        else:
            merged[section] = values
    return configs.from_dict(RunConfig, merged, "config")


def resumed_config(saved: RunConfig, given: RunConfig) -> RunConfig:
    """The config a resumed run continues with: the saved one, with the training budget of
    ``given`` when it sets one. Any other setting of ``given`` that differs from its default and
    from the saved run is refused (settings repeated with their saved values are fine, so the
    same command line can be re-run)."""
    changed = [
        path
        for path in _changes(given, saved, RunConfig())
        if path not in ("train.steps", "train.minutes") and path.split(".")[0] not in PRIOR_SECTIONS
    ]
    if changed:
        raise ConfigError(f"--resume keeps the run's config; cannot change {', '.join(changed)}")
    budget = {"steps": given.train.steps, "minutes": given.train.minutes}
    if budget == {"steps": TrainConfig().steps, "minutes": TrainConfig().minutes}:
        return saved
    return configs.replace(saved, "config", train=configs.replace(saved.train, "train", **budget))


def _changes(given: Any, saved: Any, default: Any, path: str = "") -> list[str]:
    """Dotted paths where ``given`` differs both from ``default`` and from ``saved``."""
    if dataclasses.is_dataclass(given):
        if type(default) is not type(given):
            default = type(given)()  # another kind than the default one: its own defaults
        if type(saved) is not type(given):
            return [f"{path}.kind" if path else "kind"]
        return [
            change
            for f in dataclasses.fields(given)
            for change in _changes(
                getattr(given, f.name),
                getattr(saved, f.name),
                getattr(default, f.name),
                f"{path}.{f.name}" if path else f.name,
            )
        ]
    return [path] if given != default and given != saved else []


class RunDir:
    """Paths inside a run folder, and its saved configuration."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_file = property(lambda self: self.path / "config.json")
    model_dir = property(lambda self: self.path / "model")
    codes_dir = property(lambda self: self.path / "codes")
    metrics_file = property(lambda self: self.path / "metrics.json")

    def prior_dir(self, level: str = "") -> Path:
        """RUN/prior/ for the (top) prior, RUN/prior_<level>/ for a lower level's prior."""
        return self.path / ("prior" if level in ("", "top") else f"prior_{level}")

    def codes_file(self, split: str, level: str = "") -> Path:
        return self.codes_dir / (
            f"{split}-{level}.safetensors" if level else f"{split}.safetensors"
        )

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
        return configs.from_dict(RunConfig, upgrade(raw), str(self.config_file)), data

    def require_model(self) -> Path:
        if not (self.model_dir / "model.safetensors").is_file():
            raise VQVAEError(
                f"{self.path}: no trained model in {self.model_dir}; run `vqvae train`"
            )
        return self.model_dir

    def require_prior(self, level: str = "") -> Path:
        directory = self.prior_dir(level) / "model"
        if not (directory / "model.safetensors").is_file():
            what = f"{level} prior" if level else "prior"
            raise VQVAEError(f"{self.path}: no trained {what}; run `vqvae train-prior` first")
        return directory
