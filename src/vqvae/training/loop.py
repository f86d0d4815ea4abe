"""The one training loop, for the VQ-VAE and the priors alike.

A model plugs in by providing ``training_losses(batch) -> dict`` (a differentiable ``"loss"``,
other scalar metrics, and optionally ``"code_counts"`` for codebook health) and
``save_pretrained(dir)``. The loop reads top to bottom: learning rate for this step → batch →
loss → backward → step → log → checkpoint.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from vqvae.errors import ConfigError, VQVAEError
from vqvae.metrics import CodebookHealth
from vqvae.training.batches import ShuffledBatches
from vqvae.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vqvae.training.logger import MetricsLog


class TrainingDiverged(VQVAEError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    steps: int | None = 10_000  # None: no step cap (then minutes must be set)
    minutes: float | None = None  # wall-clock budget; training ends at steps or minutes
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.02  # cosine decays to lr · min_lr_ratio
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 500
    health_window: int = 0  # steps in the codebook-health window; 0 = one epoch

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            raise ConfigError("train: set steps or minutes (or both)")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"train.steps must be >= 1, got {self.steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"train.minutes must be > 0, got {self.minutes}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        for name in ("warmup_steps", "log_every", "checkpoint_every", "health_window"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay over the run's progress (steps or time, 0 → 1)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class TrainResult:
    step: int
    seconds: float
    interrupted: bool
    metrics: dict[str, float]


@contextmanager
def _stop_on_signals():
    """SIGINT/SIGTERM ask the loop to stop after the current step (then it checkpoints)."""
    requested = {"stop": False}

    def handler(signum, frame):  # noqa: ARG001
        requested["stop"] = True

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def fit(
    model: torch.nn.Module,
    batches: ShuffledBatches,
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    desc: str = "train",
    show_progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``batches``; write logs and checkpoints under ``run_dir`` if given."""
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    torch.manual_seed(config.seed)

    step, elapsed_before = 0, 0.0
    if resume and ckpt_dir is not None and (path := latest_checkpoint(ckpt_dir)) is not None:
        state = load_checkpoint(path, model, optimizer)
        step, elapsed_before = int(state["step"]), float(state["elapsed"])
        batches.load_state_dict(state["batches"])
    log = MetricsLog(run_dir / "log.jsonl", run_dir / "tensorboard") if run_dir else None
    health = None
    window = config.health_window or batches.steps_per_epoch

    def checkpoint(elapsed: float) -> None:
        if ckpt_dir is not None:
            trainer_state = {"step": step, "elapsed": elapsed, "batches": batches.state_dict()}
            save_checkpoint(ckpt_dir, model, optimizer, trainer_state)

    budget = config.minutes * 60 if config.minutes else math.inf
    start = time.perf_counter()
    metrics: dict[str, float] = {}
    max_steps = config.steps if config.steps is not None else math.inf
    # The bar counts steps, or seconds when only a time budget is set.
    by_time = config.steps is None
    bar = tqdm(
        total=round(budget) if by_time else config.steps,
        initial=round(elapsed_before) if by_time else step,
        unit="s" if by_time else "step",
        desc=desc,
        disable=not show_progress,
        leave=False,
    )
    model.train()
    interrupted = False
    with _stop_on_signals() as stop:
        while step < max_steps:
            elapsed = elapsed_before + time.perf_counter() - start
            progress = max(step / max_steps, elapsed / budget)
            if progress >= 1.0:
                break
            if stop["stop"]:
                interrupted = True
                break
            lr = learning_rate(config, step, progress)
            for group in optimizer.param_groups:
                group["lr"] = lr

            batch = tuple(None if t is None else t.to(device) for t in next(batches))
            out = model.training_losses(batch)
            loss = out["loss"]
            if not torch.isfinite(loss):
                bar.close()
                raise TrainingDiverged(
                    f"{desc}: loss became {float(loss)} at step {step}; the last good checkpoint "
                    "is kept (lower train.lr or raise train.grad_clip)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            step += 1

            counts = out.get("code_counts")
            if counts is not None:
                if health is None:
                    health = CodebookHealth(counts.numel(), window)
                health.update(counts)
            if step % max(config.log_every, 1) == 0 or step == max_steps:
                metrics = {k: float(v.detach()) for k, v in out.items() if k != "code_counts"}
                if health is not None:
                    metrics.update(health.stats())
                metrics["lr"] = lr
                if log is not None:
                    log.write(step, metrics)
                bar.set_postfix(_postfix(metrics, step), refresh=False)
            if by_time:
                bar.update(round(elapsed_before + time.perf_counter() - start) - bar.n)
            else:
                bar.update(1)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint(elapsed_before + time.perf_counter() - start)
    bar.close()
    seconds = elapsed_before + time.perf_counter() - start
    checkpoint(seconds)
    if log is not None:
        log.close()
    return TrainResult(step=step, seconds=seconds, interrupted=interrupted, metrics=metrics)


def _postfix(metrics: dict[str, Any], step: int) -> dict[str, str]:
    keys = ("loss", "psnr", "perplexity", "codebook_usage", "bits_per_code")
    short = {"codebook_usage": "usage", "perplexity": "ppl", "bits_per_code": "bits"}
    return {
        "step": str(step),
        **{short.get(k, k): f"{metrics[k]:.3g}" for k in keys if k in metrics},
    }
