"""What the image and the log-mel classifiers share: the checks on their configs and the
training objective (cross-entropy, with the batch accuracy logged beside it)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from vqvae.errors import ConfigError


def check_classifier_config(config: Any, positive: tuple[str, ...]) -> None:
    """Reject a classifier config whose ``positive`` settings are < 1, with fewer than two
    classes, or with a dropout outside [0, 1)."""
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"classifier.{name} must be >= 1, got {getattr(config, name)}")
    if config.num_classes < 2:
        raise ConfigError(f"classifier.num_classes must be >= 2, got {config.num_classes}")
    if not 0 <= config.dropout < 1:
        raise ConfigError(f"classifier.dropout must be in [0, 1), got {config.dropout}")


def require_labels(labels: Tensor | None) -> Tensor:
    if labels is None:
        raise ConfigError("the classifier needs labelled data")
    return labels


def classification_losses(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """logits (B, classes), labels (B,) -> the loss and the batch accuracy (for the log)."""
    return {
        "loss": F.cross_entropy(logits, labels),
        "accuracy": (logits.argmax(1) == labels).float().mean().detach(),
    }
