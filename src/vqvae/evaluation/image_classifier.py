"""A small CNN image classifier: the feature space for sample-quality metrics.

Trained on the same dataset's training split, it plays the part Inception plays for FID on
natural images: the Fréchet distance between real and generated images is measured on its
penultimate-layer features, and class-conditional samples are scored by its accuracy.

    (B, C, H, W) -> [conv3×3-ReLU ×2, maxpool2] ×2 -> adaptive avg pool 4×4
                 -> linear -> ReLU = features (B, feature_dim) -> linear -> logits (B, classes)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqvae.evaluation.classification import (
    check_classifier_config,
    classification_losses,
    require_labels,
)
from vqvae.serialization import Pretrained


@dataclass
class ClassifierConfig:
    in_channels: int = 1
    num_classes: int = 10
    width: int = 16  # channels of the first block (doubled in the second)
    feature_dim: int = 128
    dropout: float = 0.3

    def __post_init__(self) -> None:
        check_classifier_config(self, ("in_channels", "width", "feature_dim"))


class ImageClassifier(Pretrained, nn.Module):
    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.ReLU(),
            ]

        self.body = nn.Sequential(
            *block(config.in_channels, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * w * 16, config.feature_dim),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> penultimate features (B, feature_dim)."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected images (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        return self.body(x - 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """Images -> class logits (B, num_classes)."""
        return self.head(self.dropout(self.features(x)))

    def training_losses(self, batch: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        x, labels = batch
        labels = require_labels(labels)
        return classification_losses(self(x), labels)

    def predict(self, images: Tensor, batch_size: int = 500) -> Tensor:
        """Predicted classes (N,) of ``images``, in eval mode."""
        return features_and_predictions(self, images, batch_size)[1]


@torch.no_grad()
def features_and_predictions(
    model: ImageClassifier, images: Tensor, batch_size: int = 500
) -> tuple[Tensor, Tensor]:
    """Features (N, feature_dim) float64 and predicted classes (N,) of ``images`` in eval mode."""
    model.eval()
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i : i + batch_size])
        feats.append(f.double())
        preds.append(model.head(f).argmax(1))
    if not feats:
        return torch.zeros(0, model.config.feature_dim, dtype=torch.float64), torch.zeros(0)
    return torch.cat(feats), torch.cat(preds)
