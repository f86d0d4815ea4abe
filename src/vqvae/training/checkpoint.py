"""Training checkpoints that survive a crash at any moment, stored without pickle.

Layout: ``DIR/step-00001234/`` holds the model folder (config.json + model.safetensors),
``optimizer.safetensors`` (every tensor of the optimiser state, flattened, plus the loop's own
tensors: RNG states, the codebook-health window) and ``trainer.json`` (step, optimiser
hyper-parameters, data position, anything else small). ``DIR/latest`` names the newest complete
checkpoint and is replaced atomically (temporary file, fsync, rename) only after that checkpoint
is fully on disk, so a crash mid-write leaves the previous one in charge.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vqvae import distributed, serialization
from vqvae.errors import CheckpointError
from vqvae.files import atomic_path, atomic_write_text
from vqvae.quantizers import Quantizer

LATEST = "latest"
TRAINER_NAME = "trainer.json"
OPTIMIZER_NAME = "optimizer.safetensors"
_STEP_PREFIX = "step-"


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


# --- random number generators -------------------------------------------------------------------
def capture_rng(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a training step may draw from: torch (CPU, and CUDA when training there) on
    every rank, NumPy's and Python's global generators. A collective: every rank must call it."""
    tensors = {
        f"rng.torch.rank{r}": s for r, s in enumerate(distributed.gather(torch.get_rng_state()))
    }
    if device.type == "cuda":
        states = distributed.gather(torch.cuda.get_rng_state(device).to(device))
        tensors.update({f"rng.cuda.rank{r}": s for r, s in enumerate(states)})
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device):
    """Undo ``capture_rng``. A rank missing from the checkpoint (more ranks than when it was
    written) takes rank 0's state."""
    me = distributed.rank()
    try:
        torch_state = tensors.get(f"rng.torch.rank{me}", tensors.get("rng.torch.rank0"))
        if torch_state is None:  # checkpoints written before per-rank states
            torch_state = tensors.get("rng.torch")
        if torch_state is not None:
            torch.set_rng_state(torch_state)
        cuda_state = tensors.get(f"rng.cuda.rank{me}", tensors.get("rng.cuda.rank0"))
        if cuda_state is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda_state, device)
        if "rng.numpy" in tensors and "numpy" in meta:
            kind, pos, has_gauss, cached = meta["numpy"]
            keys = tensors["rng.numpy"].numpy().astype(np.uint32)
            np.random.set_state((kind, keys, pos, has_gauss, cached))
        if "python" in meta:
            version, internal, gauss_next = meta["python"]
            random.setstate((version, tuple(internal), gauss_next))
    except (RuntimeError, TypeError, ValueError) as e:  # a damaged checkpoint
        raise CheckpointError(
            f"checkpoint holds a malformed random-generator state ({e})"
        ) from None


# --- training-only module state ------------------------------------------------------------------
def transient_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Buffers registered with ``persistent=False``: not part of a saved model (e.g. a pool of
    recent encoder outputs for dead-code resets) but part of where training stands."""
    persistent = set(model.state_dict())
    return {f"buffer.{name}": buf for name, buf in model.named_buffers() if name not in persistent}


def restore_transient_buffers(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for name, buf in model.named_buffers():
        saved = tensors.get(f"buffer.{name}")
        if saved is not None and saved.shape == buf.shape:
            buf.copy_(saved)
    sync_from_buffers(model)


def sync_from_buffers(model: torch.nn.Module) -> None:
    """After buffers were written in place: every quantizer re-reads what it keeps in Python
    between steps (its step counter and init flag)."""
    for module in model.modules():
        if isinstance(module, Quantizer):
            module.sync_from_buffers()


# --- saving ---------------------------------------------------------------------------------------
def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix(_STEP_PREFIX))
    except ValueError:
        return -1


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int = 1,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step-<step>`` and make it the latest; keep the ``keep`` newest.

    ``tensors`` are extra named tensors saved beside the optimiser state (``load_checkpoint``
    returns them). Every file is written atomically and ``latest`` is switched last.
    """
    directory = Path(directory)
    step = int(trainer_state["step"])
    target = directory / f"{_STEP_PREFIX}{step:08d}"
    if target.exists():  # a leftover of an interrupted save of this same step
        shutil.rmtree(target)
    try:
        model.save_pretrained(target / "model")
        flat, meta = _flatten_optimizer(optimizer.state_dict())
        flat.update({k: v.detach().contiguous().cpu() for k, v in (tensors or {}).items()})
        with atomic_path(target / OPTIMIZER_NAME) as tmp:
            save_file(flat, str(tmp))
        atomic_write_text(target / TRAINER_NAME, json.dumps({**trainer_state, "optimizer": meta}))
        atomic_write_text(directory / LATEST, target.name + "\n")  # the commit point
    except BaseException:  # a full disk, a kill: the incomplete checkpoint goes, latest stays
        if not _names(directory / LATEST, target.name):
            shutil.rmtree(target, ignore_errors=True)
        raise
    _prune(directory, target, keep)
    return target


def _names(pointer: Path, name: str) -> bool:
    try:
        return pointer.read_text().strip() == name
    except OSError:
        return False


def _prune(directory: Path, target: Path, keep: int) -> None:
    """Remove older checkpoints beyond ``keep``, and any newer than ``target``: those are
    leftovers of a run that was killed and resumed from an earlier checkpoint."""
    step = _step_of(target)
    older = sorted(
        (p for p in directory.glob(f"{_STEP_PREFIX}*") if _step_of(p) < step), key=_step_of
    )
    stale = [p for p in directory.glob(f"{_STEP_PREFIX}*") if _step_of(p) > step]
    for old in older[: max(0, len(older) - (keep - 1))] + stale:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in directory.glob(f".{LATEST}.*.tmp"):  # a kill between write and rename
        tmp.unlink(missing_ok=True)


# --- loading --------------------------------------------------------------------------------------
def latest_checkpoint(directory: str | Path) -> Path | None:
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    path = Path(directory) / pointer.read_text().strip()
    if not path.name.startswith(_STEP_PREFIX) or not path.is_dir():
        raise CheckpointError(f"{pointer}: names {path.name!r}, which is not a checkpoint here")
    return path


def _read_trainer(path: Path) -> dict[str, Any]:
    file = path / TRAINER_NAME
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: unreadable checkpoint state ({e})") from None
    if not isinstance(meta, dict) or not {"step", "optimizer", "batches"} <= set(meta):
        raise CheckpointError(f"{file}: not a training checkpoint (step/optimizer/batches missing)")
    batches = meta["batches"]
    fields_ok = (
        _is_int(meta["step"])
        and isinstance(meta.get("elapsed", 0.0), int | float)
        and _is_int(meta.get("skipped", 0))
        and isinstance(batches, dict)
        and all(_is_int(batches.get(k)) for k in ("epoch", "position", "seed"))
        and isinstance(meta["optimizer"], dict)
        and isinstance(meta.get("rng", {}), dict)
    )
    if not fields_ok:
        raise CheckpointError(f"{file}: malformed checkpoint state")
    return meta


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    file = path / OPTIMIZER_NAME
    try:
        return load_file(str(file))
    except Exception as e:  # SafetensorError, OSError, ValueError: a corrupt or missing file
        raise CheckpointError(f"{file}: not a valid safetensors file ({e})") from None


def verify_checkpoint(path: str | Path, model: torch.nn.Module) -> None:
    """Check that checkpoint ``path`` is complete and fits ``model``'s architecture, before the
    caller writes anything. Loads the weights into ``model`` (resuming loads them anyway)."""
    path = Path(path)
    serialization.load_weights(model, path / "model")
    _read_trainer(path)
    file = path / OPTIMIZER_NAME
    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except Exception as e:
        raise CheckpointError(f"{file}: not a valid safetensors file ({e})") from None


def load_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model weights and optimiser state; return the trainer state and the extra
    tensors saved with it (RNG states are restored by the caller, see ``restore_rng``)."""
    path = Path(path)
    serialization.load_weights(model, path / "model")
    meta = _read_trainer(path)
    tensors = _read_tensors(path)
    extra = {k: tensors.pop(k) for k in list(tensors) if not k.split(".", 1)[0].isdigit()}
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta.pop("optimizer")))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: optimiser state does not fit this model ({e})") from None
    return meta, extra
