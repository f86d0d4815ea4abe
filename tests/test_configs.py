"""Typed configs: unknown keys and wrong types are rejected with a message naming them."""

import pytest

from vqvae import configs
from vqvae.errors import ConfigError
from vqvae.pipeline.run import RunConfig, resolve_config


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[model.quantizer]\ncodebook_size = 64\n[train]\nlr = 0.01\n")
    cfg = resolve_config(f, ["train.lr=0.002", "model.recon_loss=bce", "train.minutes=none"])
    assert cfg.model.quantizer.codebook_size == 64
    assert cfg.train.lr == 0.002 and cfg.train.minutes is None
    assert cfg.model.recon_loss == "bce"
    # What the data decides stays open until the data is seen.
    assert cfg.model.image_size is None and cfg.model.data_variance is None


def test_yaml_and_json_files(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  batch_size: 32\n")
    assert resolve_config(tmp_path / "c.yaml", []).train.batch_size == 32
    (tmp_path / "c.json").write_text('{"train": {"batch_size": 16}}')
    assert resolve_config(tmp_path / "c.json", []).train.batch_size == 16


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.codebook_sise=3", "unknown key.*codebook_sise"),
        ("train.lr=fast", r"train.lr: expected a number, got 'fast'"),
        ("train.batch_size=1.5", "train.batch_size: expected an integer"),
        ("model.recon_loss=l1", "expected one of 'mse', 'bce'"),
        ("model.quantizer.kmeans_init=1", "expected true/false"),
        ("model=3", "expected a table"),
        ("model.quantizer.codebook_size=1", "codebook_size must be at least 2"),
        ("model.image_size=30", "not divisible"),
        ("nonsense", "expected key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(tmp_path / "nope.toml", [])
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        resolve_config(tmp_path / "bad.toml", [])
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ConfigError, match=".toml, .yaml"):
        resolve_config(tmp_path / "c.ini", [])


def test_replace_never_mutates_the_original():
    cfg = RunConfig()
    other = configs.replace(cfg.train, "train", lr=0.5)
    assert cfg.train.lr != 0.5 and other.lr == 0.5


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.toml"))
    assert files
    for f in files:
        resolve_config(f, [])


def _run_config(*overrides: str) -> RunConfig:
    return resolve_config(None, list(overrides))


def test_resume_keeps_the_saved_config_and_takes_only_the_budget():
    from vqvae.pipeline.run import resumed_config

    saved = _run_config("model.hidden=64", "model.image_size=28", "train.steps=100")
    # the same command again, or none of its settings: the saved run continues unchanged
    assert resumed_config(saved, _run_config("model.hidden=64")) == saved
    assert resumed_config(saved, _run_config()) == saved
    # a new budget is taken; the prior's sections are train-prior's business, not train's
    resumed = resumed_config(saved, _run_config("train.steps=500", "prior.layers=3"))
    assert resumed.train.steps == 500 and resumed.model == saved.model
    assert resumed.prior == saved.prior


@pytest.mark.parametrize(
    "override, named",
    [
        ("model.hidden=32", "model.hidden"),
        ("model.quantizer.codebook_size=64", "model.quantizer.codebook_size"),
        ("model.kind=vae", "model.kind"),
        ("train.lr=0.5", "train.lr"),
    ],
)
def test_resume_refuses_a_changed_setting_naming_it(override, named):
    from vqvae.pipeline.run import resumed_config

    saved = _run_config("model.hidden=64")
    with pytest.raises(ConfigError, match=f"cannot change {named}"):
        resumed_config(saved, _run_config(override))


def test_a_registered_kind_picks_the_section_dataclass():
    config = _run_config("prior.kind=transformer", "prior.dim=32")
    assert type(config.prior).__name__ == "TransformerPriorConfig" and config.prior.dim == 32
    with pytest.raises(ConfigError, match="prior.kind: unknown prior 'gpt'; known: pixelcnn"):
        _run_config("prior.kind=gpt")
    with pytest.raises(ConfigError, match="unknown key.*channels"):
        _run_config("prior.kind=transformer", "prior.channels=8")  # a PixelCNN setting


def test_release_0_1_prior_spelling_is_upgraded():
    config = _run_config("prior_kind=transformer", "transformer.heads=2", "transformer.dim=8")
    assert config.prior.kind == "transformer" and config.prior.heads == 2
    assert _run_config("prior_kind=pixelcnn", "prior.layers=3").prior.layers == 3
    audio = _run_config("model.kind=audio", "transformer.layers=2")  # audio used this section
    assert audio.prior.kind == "transformer" and audio.prior.layers == 2
