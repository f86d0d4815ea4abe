"""One rank of the multi-process tests (launched by torchrun; also imported by them).

Run under ``torchrun --nproc-per-node 2 ddp_gloo_worker.py OUT`` it trains a tiny VQ-VAE three
times through ``vqvae.training.fit`` and writes, per rank, what the test compares:

- ``resets``: EMA codebook with k-means initialisation and aggressive dead-code resets; after
  every step a digest of every parameter and buffer, and how many codes were just reset.
- ``ema``: k-means and resets off, so its statistics can be compared with one process training
  on the batches of both ranks at once (``train_single``).
- ``skip``: rank 1 alone sees a NaN loss at steps 1 and 3; both ranks must skip those batches.

Every model carries a module the loss never uses, so DDP must not wait for its gradient.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from vqvae import distributed
from vqvae.models import VQVAE, VQVAEConfig
from vqvae.quantizers import QuantizerConfig
from vqvae.training import ShuffledBatches, TrainConfig, fit

N_IMAGES = 64
STEPS = 6


def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(N_IMAGES, 1, 8, 8, generator=g)


def tiny_model(**quantizer) -> VQVAE:
    torch.manual_seed(0)
    q = QuantizerConfig(kind="ema", codebook_size=16, dim=4, **quantizer)
    config = VQVAEConfig(
        in_channels=1, image_size=8, downsample=2, hidden=8, res_hidden=4, res_blocks=1, quantizer=q
    )
    model = VQVAE(config)
    model.unused = nn.Linear(3, 3)  # never called: DDP must not hang waiting for its gradient
    return model


RESET_QUANTIZER = {"kmeans_init": True, "dead_code_threshold": 2.0, "usage_decay": 0.5}
EMA_QUANTIZER = {"kmeans_init": False, "dead_code_threshold": 0.0}


def train_config(batch_size: int, steps: int = STEPS, **kw) -> TrainConfig:
    return TrainConfig(
        steps=steps, batch_size=batch_size, lr=3e-3, warmup_steps=0, log_every=1000, **kw
    )


def digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_single(quantizer: dict, batch_size: int, steps: int = STEPS) -> VQVAE:
    """The one-process reference (no process group)."""
    model = tiny_model(**quantizer)
    batches = ShuffledBatches((images(), None), batch_size, seed=0, rank=0, world_size=1)
    fit(model, batches, train_config(batch_size, steps), show_progress=False)
    return model


def _count_resets(quantizer: nn.Module) -> dict[str, int]:
    """Count dead-code resets: calls of the quantizer's code-overwriting hook that replace only
    some codes (k-means initialisation replaces them all)."""
    seen = {"resets": 0}
    set_codes = quantizer._set_codes

    def spy(which, vectors):
        if which.dtype != torch.bool or not bool(which.all()):
            seen["resets"] += 1
        return set_codes(which, vectors)

    quantizer._set_codes = spy
    return seen


def _run_resets(out: Path, rank: int) -> None:
    model = tiny_model(**RESET_QUANTIZER)
    seen = _count_resets(model.quantizer)
    digests, resets = [], []

    def on_step(step: int, m: nn.Module) -> None:
        digests.append(digest(m))
        resets.append(seen["resets"])

    batches = ShuffledBatches((images(), None), 8, seed=0)
    fit(model, batches, train_config(8), show_progress=False, on_step=on_step)
    record = {"digests": digests, "resets": resets}
    (out / f"resets-rank{rank}.json").write_text(json.dumps(record))
    save_file(_state(model), str(out / f"resets-rank{rank}.safetensors"))


def _run_ema(out: Path, rank: int) -> None:
    model = tiny_model(**EMA_QUANTIZER)
    batches = ShuffledBatches((images(), None), 8, seed=0)
    fit(model, batches, train_config(8), show_progress=False)
    save_file(_state(model), str(out / f"ema-rank{rank}.safetensors"))


def _run_skip(out: Path, rank: int) -> None:
    model = tiny_model(**EMA_QUANTIZER)
    calls = {"n": 0}
    losses = model.training_losses

    def poisoned(batch):
        result = losses(batch)
        calls["n"] += 1
        if calls["n"] in (1, 3) and rank == 1:  # the first step too: DDP learns its graph there
            result["loss"] = result["loss"] * float("nan")
        return result

    model.training_losses = poisoned
    batches = ShuffledBatches((images(), None), 8, seed=0)
    result = fit(model, batches, train_config(8, skip_nonfinite=True), show_progress=False)
    record = {"skipped": result.skipped, "step": result.step, "digest": digest(model)}
    (out / f"skip-rank{rank}.json").write_text(json.dumps(record))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def main(out: Path) -> None:
    with distributed.process_group_from_env():
        rank = distributed.rank()
        assert distributed.world_size() == 2, "run me under torchrun --nproc-per-node 2"
        _run_resets(out, rank)
        _run_ema(out, rank)
        _run_skip(out, rank)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
