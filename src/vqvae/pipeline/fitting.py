"""Training a model of the pipeline on this process's device, and stage two over a codes
dataset: the prior training that image and audio runs share."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqvae import distributed
from vqvae.data import Codes
from vqvae.pipeline import plots
from vqvae.pipeline.run import RunConfig, RunDir
from vqvae.training import (
    ShuffledBatches,
    TrainConfig,
    TrainResult,
    fit,
    latest_checkpoint,
    read_log,
    verify_checkpoint,
)


def fit_on_device(
    model: torch.nn.Module,
    tensors: tuple[torch.Tensor | None, ...],
    config: TrainConfig,
    *,
    run_dir: str | Path,
    resume: bool,
    desc: str,
    show_progress: bool,
) -> TrainResult:
    """Train ``model`` on shuffled batches of ``tensors`` on this process's device, then move
    it back to the CPU (where it is saved and measured)."""
    batches = ShuffledBatches(tensors, config.batch_size, config.seed)
    result = fit(
        model.to(distributed.local_device()),
        batches,
        config,
        run_dir=run_dir,
        resume=resume,
        desc=desc,
        show_progress=show_progress,
    )
    model.cpu()
    return result


@dataclass
class PriorCodes:
    """The codes a prior trains and is measured on, and whether it is class-conditional."""

    train: Codes
    test: Codes
    conditional: bool  # the config asks for it and the codes carry labels
    num_classes: int  # the prior's classes (0 unless conditional)

    @classmethod
    def of(
        cls, config: RunConfig, num_classes: int | None, codes_of: Callable[[str], Codes]
    ) -> PriorCodes:
        """``codes_of(split)`` for the training and test splits; ``num_classes``: the data's."""
        train, test = codes_of("train"), codes_of("test")
        conditional = config.conditional_prior and train.labels is not None
        return cls(train, test, conditional, int(num_classes or 0) if conditional else 0)

    def labels(self, split: str) -> np.ndarray | None:
        """The labels of ``split`` that the prior is given (None when unconditional)."""
        return getattr(self, split).labels if self.conditional else None


def fit_prior_on_codes(
    run: RunDir,
    config: RunConfig,
    spec: str,
    prior: torch.nn.Module,
    codes: PriorCodes,
    *,
    resume: bool,
    show_progress: bool,
) -> bool:
    """Train ``prior`` on the training codes (with their labels if conditional) in RUN/prior/;
    rank 0 then saves it, the config that built it and its loss curves. A new prior replaces
    the old one; ``resume`` continues it (after checking its checkpoint fits ``prior``).
    Returns whether this process is rank 0, the one that measures it."""
    if resume and (ckpt := latest_checkpoint(run.prior_dir / "checkpoints")) is not None:
        verify_checkpoint(ckpt, prior)
    main = distributed.is_main_process()
    if main and not resume and run.prior_dir.exists():
        shutil.rmtree(run.prior_dir)  # a new prior replaces the old one
    labels = codes.labels("train")
    fit_on_device(
        prior,
        (
            torch.from_numpy(codes.train.indices),
            None if labels is None else torch.from_numpy(labels),
        ),
        config.prior_train,
        run_dir=run.prior_dir,
        resume=resume,
        desc="prior",
        show_progress=show_progress,
    )
    if not main:
        return False
    prior.save_pretrained(run.prior_model_dir)
    run.write_config(config, spec)
    plots.plot_loss_curves(
        run.path / "prior_loss_curves.png",
        read_log(run.prior_dir / "log.jsonl"),
        ["train/loss", "train/bits_per_code", "train/lr"],
        "prior",
    )
    return True
