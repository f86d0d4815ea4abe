"""Training checkpoints that survive a crash at any moment, stored without pickle.

Layout: ``DIR/step-00001234/`` holds the model folder (config.json + model.safetensors),
``optimizer.safetensors`` (every tensor of the optimiser state, flattened) and ``trainer.json``
(step, optimiser hyper-parameters, data position, anything else small). ``DIR/latest`` names the
newest complete checkpoint and is replaced atomically only after that checkpoint is fully on
disk, so a crash mid-write leaves the previous one in charge.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vqvae import serialization
from vqvae.errors import CheckpointError
from vqvae.files import atomic_path, atomic_write_text

LATEST = "latest"


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    directory = Path(directory)
    step = int(trainer_state["step"])
    target = directory / f"step-{step:08d}"
    if target.exists():  # a leftover of an interrupted save of this same step
        shutil.rmtree(target)
    model.save_pretrained(target / "model")
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    tensors["rng.torch"] = torch.get_rng_state()
    with atomic_path(target / "optimizer.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(target / "trainer.json", json.dumps({**trainer_state, "optimizer": meta}))
    atomic_write_text(directory / LATEST, target.name + "\n")  # the commit point
    for old in sorted(directory.glob("step-*"))[:-keep]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(directory: str | Path) -> Path | None:
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    path = Path(directory) / pointer.read_text().strip()
    if not path.is_dir():
        raise CheckpointError(f"{pointer}: names {path.name}, which does not exist")
    return path


def load_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model weights, optimiser state and the torch RNG; return the trainer state."""
    path = Path(path)
    serialization.load_weights(model, path / "model")
    try:
        meta = json.loads((path / "trainer.json").read_text())
        tensors = load_file(str(path / "optimizer.safetensors"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from None
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta.pop("optimizer")))
    return meta
