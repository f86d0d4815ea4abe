"""A small log-mel CNN that recognises the class of a clip (e.g. the spoken digit).

It measures intelligibility rather than sample-by-sample fidelity: trained on real training
audio, its accuracy on reconstructions (or on class-conditional samples) is compared with its
accuracy on the real test audio.

    waveform (B, T) -> log mel (B, n_mels, frames), minus its mean (level invariance)
    -> [conv3×3, BatchNorm, ReLU, maxpool 2] × 3 -> average pool to 4×4 -> dropout -> linear
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae import serialization
from vqvae.errors import ConfigError
from vqvae.metrics.audio import log_mel


@dataclass
class LogMelClassifierConfig:
    sample_rate: int = 8000
    num_classes: int = 10
    n_fft: int = 256  # 32 ms at 8 kHz
    hop: int = 80  # 10 ms at 8 kHz
    n_mels: int = 40
    width: int = 32  # channels of the first block (doubled in each of the next two)
    dropout: float = 0.3

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop", "n_mels", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"classifier.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ConfigError(f"classifier.num_classes must be >= 2, got {self.num_classes}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"classifier.dropout must be in [0, 1), got {self.dropout}")


class LogMelClassifier(nn.Module):
    def __init__(self, config: LogMelClassifierConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Dropout(config.dropout),
        )
        self.head = nn.Linear(4 * w * 16, config.num_classes)

    def features(self, waves: Tensor) -> Tensor:
        """Waveforms (B, T) (or (B, 1, T)) -> normalised log mel (B, 1, n_mels, frames)."""
        if waves.dim() == 3 and waves.shape[1] == 1:
            waves = waves[:, 0]
        if waves.dim() != 2:
            raise ValueError(f"expected waveforms (B, T), got shape {tuple(waves.shape)}")
        c = self.config
        spec = log_mel(waves, c.sample_rate, c.n_fft, c.hop, c.n_mels)  # (B, mels, frames)
        return (spec - spec.mean((1, 2), keepdim=True))[:, None]

    def forward(self, waves: Tensor) -> Tensor:
        """Waveforms -> class logits (B, num_classes)."""
        return self.head(self.body(self.features(waves)))

    def training_losses(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        waves, labels = batch[0], batch[1]
        if labels is None:
            raise ConfigError("the classifier needs labelled data")
        logits = self(waves)
        return {
            "loss": F.cross_entropy(logits, labels),
            "accuracy": (logits.argmax(1) == labels).float().mean().detach(),
        }

    @torch.no_grad()
    def predict(self, waves: Tensor, batch_size: int = 256) -> Tensor:
        """Predicted classes (N,) in eval mode."""
        was_training = self.training
        self.eval()
        try:
            out = [
                self(waves[i : i + batch_size]).argmax(1) for i in range(0, len(waves), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def save_pretrained(self, directory: str | Path) -> Path:
        return serialization.save_module(self, self.config, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> LogMelClassifier:
        config = serialization.read_config(directory, cls.__name__, LogMelClassifierConfig)
        model = serialization.load_weights(cls(config), directory)
        return model.to(map_location).eval()
