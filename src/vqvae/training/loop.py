"""The one training loop, for the VQ-VAE and the priors alike.

A model plugs in by providing ``training_losses(batch) -> dict`` (a differentiable ``"loss"``,
other scalar metrics, and optionally ``"code_counts"`` for codebook health) and
``save_pretrained(dir)``. The loop reads top to bottom: learning rate for this step → batch →
loss → backward → step → log → checkpoint.

Inside a torch.distributed process group (see ``vqvae.distributed``) the model is wrapped in
DDP so gradients are averaged over ranks; every rank makes the same decisions (stop, skip,
diverge) from one small collective per step, and only rank 0 writes logs and checkpoints.

Resuming is exact for step budgets: model, optimiser, codebook buffers, health window, RNG
states, data position and step come back from the checkpoint, so a run killed at any moment
and resumed ends with the same weights as one never interrupted. With ``minutes`` the schedule
follows the wall clock, which no checkpoint can replay.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from vqvae import distributed, threads
from vqvae.errors import ConfigError, VQVAEError
from vqvae.metrics import CodebookHealth
from vqvae.training.allocator import keep_freed_memory
from vqvae.training.batches import ShuffledBatches
from vqvae.training.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    restore_transient_buffers,
    save_checkpoint,
    sync_from_buffers,
    transient_buffers,
)
from vqvae.training.logger import MetricsLog, truncate_log

# With train.skip_nonfinite, this many non-finite batches in a row still stop the run.
MAX_CONSECUTIVE_SKIPS = 10


class TrainingDiverged(VQVAEError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    steps: int | None = 10_000  # None: no step cap (then minutes must be set)
    minutes: float | None = None  # wall-clock budget; training ends at steps or minutes
    batch_size: int = 128  # per process: W processes train on W·batch_size items a step
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
    skip_nonfinite: bool = False  # skip a batch with a NaN/inf loss or gradient instead of stopping
    # true: fit() makes glibc malloc keep freed memory for the next step (training.allocator:
    # ~15% shorter CPU steps). A process-wide setting, so the library leaves it to the process's
    # owner: the vqvae command applies it at start; a program of your own can call
    # vqvae.training.keep_freed_memory() or set this. (0.1.0 runs saved true: still accepted.)
    keep_freed_memory: bool = False
    # Checkpoints kept in RUN/checkpoints (the newest ones): resuming needs only the last, and
    # the trained model is saved apart from them (RUN/model).
    keep_checkpoints: int = 1
    # "bf16": the model's forward runs under autocast (bfloat16 convolutions and matrix
    # products, on the CPU and on CUDA); quantizers run in float32 whatever the autocast
    # (their distances, EMA statistics and losses), and so do the losses (see autocast()).
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            raise ConfigError("train: set steps or minutes (or both)")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"train.steps must be >= 1, got {self.steps}")
        if self.minutes is not None and not 0 < self.minutes < math.inf:
            raise ConfigError(f"train.minutes must be a number > 0, got {self.minutes}")
        for name in ("batch_size", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"train.lr must be a number > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"train.{name} must be a number >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("warmup_steps", "log_every", "checkpoint_every", "health_window", "seed"):
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
    stop_signal: int | None = None  # the signal that interrupted the run, when this rank got one
    skipped: int = 0  # batches skipped for a non-finite loss or gradient


class TrainingInterrupted(Exception):
    """A training that a signal stopped after it saved its checkpoint, raised by callers that
    have no result to return then (a prior's metrics): ``what`` trained, ``result`` where it
    stopped, ``resume`` the command that continues it."""

    def __init__(self, what: str, result: TrainResult, resume: str) -> None:
        super().__init__(f"{what} interrupted at step {result.step}")
        self.what, self.result, self.resume = what, result, resume


@contextmanager
def _stop_on_signals():
    """SIGINT/SIGTERM ask the loop to stop after the current step (then it checkpoints). A
    second signal stops at once (KeyboardInterrupt)."""
    requested: dict[str, Any] = {"stop": False, "signal": None}

    def handler(signum, frame):  # noqa: ARG001
        if requested["stop"]:
            raise KeyboardInterrupt
        requested["stop"], requested["signal"] = True, signum

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


class _TrainingLosses(nn.Module):
    """Makes ``model.training_losses`` the ``forward`` DDP wraps, so DDP sees the call and
    averages the gradients it produces."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: tuple) -> dict[str, torch.Tensor]:
        return self.model.training_losses(batch)


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP when this process is one of several, else the model's own ``training_losses``.

    ``static_graph``: DDP learns on the first step which parameters the loss uses, so a module
    it never uses (a class embedding without labels, an unused branch) cannot leave DDP waiting
    for its gradient, without ``find_unused_parameters``' graph walk (and warning) every step.
    It assumes that set stays the same from step to step, as it does for every model here.
    ``forward_sync_buffers=False``: codebook buffers are kept identical by the quantizers
    themselves (statistics summed over ranks), not overwritten by rank 0's copy.
    """
    wrapped = _TrainingLosses(model)
    if not distributed.is_distributed():
        return wrapped
    from torch.nn.parallel import DistributedDataParallel

    # CPU convolutions return some weight gradients in another memory layout than the weight
    # (only over size-1 dimensions here); DDP copies them and warns on every rank.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    return DistributedDataParallel(
        wrapped,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,  # buffers are still made equal once, when DDP starts
        static_graph=True,
        gradient_as_bucket_view=True,  # no second copy of the gradients
    )


FUSED = ("cpu", "cuda")  # devices with a fused AdamW kernel


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's precision: fp32 as it is, or bf16 autocast on ``device``. Only the
    forward runs under it (backward follows the forward's dtypes; the optimiser and its state
    stay fp32). The quantizers leave autocast and cast their input up
    (``Quantizer.__call__``), and the models compute their losses from a float32 decoder
    output, so only the encoder's and the decoder's layers run in bfloat16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def fit(
    model: torch.nn.Module,
    batches: ShuffledBatches,
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    desc: str = "train",
    show_progress: bool = True,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``batches``; write logs and checkpoints under ``run_dir`` if given.

    ``on_step(step, model)`` is called on every rank after each optimisation step.
    """
    if config.keep_freed_memory:  # process-wide: only when asked (see TrainConfig)
        keep_freed_memory()
    run = _Run(model, batches, config, run_dir, desc)
    torch.manual_seed(config.seed)
    if resume:
        run.resume()
    run.open_log(resume)
    trainer = _data_parallel(model, run.device)
    budget = config.minutes * 60 if config.minutes else math.inf
    max_steps = config.steps if config.steps is not None else math.inf
    start = time.perf_counter()

    def elapsed() -> float:
        return run.elapsed_before + time.perf_counter() - start

    bar = _progress_bar(run, show_progress and run.main)
    policy = threads.current_policy()  # the process's thread policy, if its owner set one
    run.log_threads(policy)
    trainer.train()
    metrics: dict[str, float] = {}
    interrupted, stop_requested = False, False
    try:
        with _stop_on_signals() as stop:
            while run.step < max_steps:
                progress = max(run.step / max_steps, elapsed() / budget)
                if progress >= 1.0:
                    break
                if stop_requested:
                    interrupted = True
                    break
                lr = learning_rate(config, run.step, progress)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr

                batch = tuple(None if t is None else t.to(run.device) for t in next(batches))
                out, stepped, stop_requested = run.guarded_step(trainer, batch, stop["stop"])
                run.step += 1
                if on_step is not None:
                    on_step(run.step, model)

                if stepped:
                    run.update_health(out.get("code_counts"))
                if policy is not None and policy.retune():  # other work came or went
                    run.log_threads(policy)
                if run.step % max(config.log_every, 1) == 0 or run.step == max_steps:
                    metrics = run.log_metrics(out, lr)
                    bar.set_postfix(_postfix(metrics, run.step), refresh=False)
                bar.update(round(elapsed()) - bar.n if config.steps is None else 1)
                if config.checkpoint_every and run.step % config.checkpoint_every == 0:
                    run.checkpoint(elapsed())
        seconds = elapsed()
        if run.last_saved != run.step:  # not again: that would replace a complete checkpoint
            run.checkpoint(seconds)
    finally:
        bar.close()
        if run.log is not None:
            run.log.close()
    return TrainResult(
        step=run.step,
        seconds=seconds,
        interrupted=interrupted,
        metrics=metrics,
        stop_signal=stop["signal"],
        skipped=run.skipped,
    )


class _Run:
    """What one call of ``fit`` works with: the model and its optimiser, where the run stands
    (step, skipped batches, the codebook-health window), and where it writes (the metrics log
    and checkpoints, both on rank 0 only)."""

    def __init__(
        self,
        model: nn.Module,
        batches: ShuffledBatches,
        config: TrainConfig,
        run_dir: str | Path | None,
        desc: str,
    ) -> None:
        self.model, self.batches, self.config, self.desc = model, batches, config, desc
        self.main = distributed.is_main_process()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.ckpt_dir = self.run_dir / "checkpoints" if self.run_dir is not None else None
        self.device = next(model.parameters()).device
        self.params = [p for p in model.parameters() if p.requires_grad]
        # The fused kernel: one pass over all parameters (on CPU 0.6 ms a step where the
        # default per-tensor loop took 2.3 ms for the Sonnet-example VQ-VAE; same arithmetic,
        # deterministic).
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=self.device.type in FUSED,
        )
        self.step = 0
        self.elapsed_before = 0.0  # seconds trained before this process (a resumed run)
        self.skipped = 0  # batches skipped for a non-finite loss or gradient
        self.consecutive = 0  # ... of them in a row
        self.last_saved: int | None = None  # the newest checkpoint's step
        self.health: CodebookHealth | None = None  # starts with the first code histogram
        self.health_window: torch.Tensor | None = None  # a resumed run's saved window
        self.log: MetricsLog | None = None

    # --- start ----------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the latest checkpoint, if there is one: weights, optimiser, RNG states,
        transient buffers, data position, step and health window."""
        path = latest_checkpoint(self.ckpt_dir) if self.ckpt_dir is not None else None
        if path is None:
            return
        state, extra = load_checkpoint(path, self.model, self.optimizer)
        restore_rng(extra, state.get("rng", {}), self.device)
        restore_transient_buffers(self.model, extra)
        self.step, self.elapsed_before = int(state["step"]), float(state["elapsed"])
        self.skipped = int(state.get("skipped", 0))
        self.batches.load_state_dict(state["batches"])
        self.health_window = extra.get("health.window")
        self.last_saved = self.step or None

    def log_threads(self, policy: threads.ThreadPolicy | None) -> None:
        """The thread policy in force from this step on (vqvae.threads), in the run's log;
        printed the first time a process trains."""
        if policy is not None and self.main:
            policy.announce()
        if policy is not None and self.log is not None:
            self.log.write(
                self.step, {"policy": policy.describe(), "count": policy.threads}, "threads"
            )

    def open_log(self, resume: bool) -> None:
        if self.run_dir is None or not self.main:
            return
        if resume:  # steps after the checkpoint will be logged again
            truncate_log(self.run_dir / "log.jsonl", self.step)
        self.log = MetricsLog(self.run_dir / "log.jsonl", self.run_dir / "tensorboard")

    # --- one step -------------------------------------------------------------------------------
    def guarded_step(
        self, trainer: nn.Module, batch: tuple, stop_asked: bool
    ) -> tuple[dict[str, torch.Tensor], bool, bool]:
        """Loss → backward → clip → optimiser step on ``batch``, unless the loss or the gradient
        is non-finite on any rank: then stop (``TrainingDiverged``) or, with
        ``skip_nonfinite``, undo the batch. Returns (the losses, whether the optimiser stepped,
        whether any rank was asked to stop); every rank returns the same decisions."""
        config, optimizer = self.config, self.optimizer
        # A skipped batch must leave no trace, including codebook buffers the forward pass
        # updates (EMA statistics, k-means, resets).
        snapshot = _snapshot(self.model) if config.skip_nonfinite else None
        with autocast(config.precision, self.device):
            out = trainer(batch)
        loss = out["loss"]
        loss_ok = bool(torch.isfinite(loss))
        # One collective a step: the decisions every rank must share.
        bad, stop_requested = distributed.any_rank(not loss_ok, stop_asked)
        what = (
            f"loss became {float(loss.detach())}"
            if not loss_ok
            else "another rank's loss became non-finite"
        )
        optimizer.zero_grad(set_to_none=True)
        if not bad:
            loss.backward()  # DDP averages the gradients over ranks here
            if config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
                # The averaged gradient is the same on every rank: so is this decision.
                bad = not bool(torch.isfinite(norm))
                what = f"gradient norm became {float(norm)}"
        if not bad:
            self.consecutive = 0
            optimizer.step()
            return out, True, stop_requested
        if snapshot is None:
            raise self.diverged(what)
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive > MAX_CONSECUTIVE_SKIPS:
            raise self.diverged(f"{self.consecutive} batches in a row were non-finite")
        _restore(self.model, snapshot)
        optimizer.zero_grad(set_to_none=True)
        return out, False, stop_requested

    def diverged(self, what: str) -> TrainingDiverged:  # what: "loss became nan", ...
        kept = (
            f"the last good checkpoint (step {self.last_saved}) is kept"
            if self.last_saved is not None
            else "no checkpoint was written"
        )
        return TrainingDiverged(
            f"{self.desc}: {what} at step {self.step + 1}; {kept} (lower train.lr, raise "
            "train.grad_clip, or set train.skip_nonfinite=true)"
        )

    # --- after a step ---------------------------------------------------------------------------
    def update_health(self, counts: torch.Tensor | None) -> None:
        """Add a step's code histogram to the codebook-health window (one epoch by default)."""
        if counts is None:
            return
        if self.health is None:
            window = self.config.health_window or self.batches.steps_per_epoch
            self.health = CodebookHealth(counts.numel(), window)
            if self.health_window is not None:
                self.health.load_state_dict(self.health_window)
        self.health.update(counts.flatten())

    def log_metrics(self, out: dict[str, torch.Tensor], lr: float) -> dict[str, float]:
        """The step's losses averaged over ranks (a collective), codebook health, learning rate
        and skips; written to the log on rank 0. Returns them."""
        values = {k: float(v.detach()) for k, v in out.items() if k != "code_counts"}
        metrics = distributed.mean_over_ranks(values)
        if self.health is not None:
            metrics.update(self.health.stats())
        metrics["lr"] = lr
        if self.skipped:
            metrics["skipped"] = self.skipped
        if self.log is not None:
            self.log.write(self.step, metrics)
        return metrics

    def checkpoint(self, elapsed: float) -> None:
        """Save where the run stands (rank 0 writes; a collective: every rank calls it)."""
        if self.ckpt_dir is None:
            return
        tensors, rng_meta = capture_rng(self.device)
        tensors.update(transient_buffers(self.model))
        if self.health is not None:
            tensors["health.window"] = self.health.state_dict()
        if self.main:
            trainer_state = {
                "step": self.step,
                "elapsed": elapsed,
                "skipped": self.skipped,
                "batches": self.batches.state_dict(),
                "rng": rng_meta,
            }
            save_checkpoint(
                self.ckpt_dir,
                self.model,
                self.optimizer,
                trainer_state,
                keep=self.config.keep_checkpoints,
                tensors=tensors,
            )
        self.last_saved = self.step


def _progress_bar(run: _Run, show: bool) -> tqdm:
    """Counts steps, or seconds when only a time budget is set."""
    by_time = run.config.steps is None
    return tqdm(
        total=round(run.config.minutes * 60) if by_time else run.config.steps,
        initial=round(run.elapsed_before) if by_time else run.step,
        unit="s" if by_time else "step",
        desc=run.desc,
        disable=not show,
        leave=False,
    )


def _state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer, the non-persistent ones too (a pool of recent encoder
    outputs, say), which ``state_dict`` leaves out."""
    return [*model.parameters(), *model.buffers()]


def _snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in _state_tensors(model)]


@torch.no_grad()
def _restore(model: nn.Module, snapshot: list[torch.Tensor]) -> None:
    for tensor, saved in zip(_state_tensors(model), snapshot, strict=True):
        tensor.copy_(saved)
    sync_from_buffers(model)


def _postfix(metrics: dict[str, Any], step: int) -> dict[str, str]:
    keys = ("loss", "psnr", "perplexity", "codebook_usage", "bits_per_code")
    short = {"codebook_usage": "usage", "perplexity": "ppl", "bits_per_code": "bits"}
    return {
        "step": str(step),
        **{short.get(k, k): f"{metrics[k]:.3g}" for k in keys if k in metrics},
    }
