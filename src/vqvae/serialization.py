"""Models on disk: a folder with ``config.json`` and ``model.safetensors`` (no pickle).

``config.json`` holds ``{"type": <class name>, "config": {...}}`` so a folder rebuilds its model
without guessing. Both files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqvae import configs
from vqvae.errors import CheckpointError, ConfigError
from vqvae.files import atomic_path, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_module(module: torch.nn.Module, config: Any, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    meta = {"type": type(module).__name__, "config": configs.to_dict(config)}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    return directory


def _read_meta(directory: str | Path, what: str) -> tuple[Path, Any]:
    """(path, parsed content) of a folder's ``config.json``; ``what`` names the folder
    expected in the error when it is missing."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (expected a saved {what} folder)")
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def saved_type(directory: str | Path) -> str:
    """The class name a model folder was saved from (its ``config.json`` "type")."""
    path, meta = _read_meta(directory, "model")
    if not isinstance(meta, dict) or not isinstance(meta.get("type"), str):
        raise CheckpointError(f"{path}: names no model type")
    return meta["type"]


def read_config(directory: str | Path, expected_type: str, config_cls: type) -> Any:
    path, meta = _read_meta(directory, expected_type)
    if not isinstance(meta, dict) or meta.get("type") != expected_type:
        found = meta.get("type") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: holds a {found!r}, expected a {expected_type!r}")
    try:
        return configs.from_dict(config_cls, meta.get("config"), f"{path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_weights(module: torch.nn.Module, directory: str | Path) -> torch.nn.Module:
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, "
                f"the config expects {tuple(expected[name].shape)}"
            )
    module.load_state_dict(state)
    return module


class Pretrained:
    """Mixin for a module built from one typed ``config``: ``save_pretrained`` writes the
    folder, ``from_pretrained`` rebuilds the module from it alone (in eval mode)."""

    config_class: type
    config: Any

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_module(self, self.config, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu"):
        config = read_config(directory, cls.__name__, cls.config_class)
        return load_weights(cls(config), directory).to(map_location).eval()
