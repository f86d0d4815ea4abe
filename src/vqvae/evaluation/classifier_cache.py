"""The classifiers that score a run (image samples, audio intelligibility) are trained once per
dataset and cached in a folder: config.json + model.safetensors + classifier.json, the last
recording what data the classifier was made for and its test-split accuracy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from vqvae.errors import VQVAEError
from vqvae.files import atomic_write_text
from vqvae.training import ShuffledBatches, TrainConfig, fit

META = "classifier.json"

Classifier = TypeVar("Classifier")


def fit_classifier(
    build: Callable[[], Classifier],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    show_progress: bool = True,
) -> Classifier:
    """``build()`` under ``config.seed`` (reproducible initial weights), trained on shuffled
    batches of (inputs, labels)."""
    torch.manual_seed(config.seed)
    model = build()
    batches = ShuffledBatches((inputs, labels), config.batch_size, config.seed)
    fit(model, batches, config, desc="classifier", show_progress=show_progress)
    return model


def require_labels(data: Any, purpose: str) -> None:
    """Refuse unlabelled training data: ``purpose`` (e.g. "sample quality needs labelled
    data") says what for."""
    if data.train.labels is None or not data.train.num_classes:
        raise VQVAEError(f"{data.spec}: {purpose} to train a classifier")


def load_or_train(
    directory: str | Path,
    made_for: dict[str, Any],
    load: Callable[[Path], Classifier],
    train: Callable[[], tuple[Classifier, float]],
) -> tuple[Classifier, float]:
    """(classifier, test accuracy): ``load(directory)`` when its classifier.json records the
    same ``made_for`` (the data's identity), else ``train()``'s, then saved to ``directory``."""
    directory = Path(directory)
    meta_path = directory / META
    if meta_path.is_file() and (directory / "model.safetensors").is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if all(meta.get(k) == v for k, v in made_for.items()):
            return load(directory), float(meta["test_accuracy"])
    model, accuracy = train()
    model.save_pretrained(directory)
    payload = {**made_for, "test_accuracy": accuracy}
    atomic_write_text(meta_path, json.dumps(payload, indent=2) + "\n")
    return model, accuracy
