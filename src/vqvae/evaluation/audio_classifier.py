"""A small log-mel CNN that recognises the class of a clip (e.g. the spoken digit).

It measures intelligibility rather than sample-by-sample fidelity: trained on real training
audio, its accuracy on reconstructions (or on class-conditional samples) is compared with its
accuracy on the real test audio.

    waveform (B, T) -> log mel (B, n_mels, frames), minus its mean (level invariance)
    -> [conv3×3, BatchNorm, ReLU, maxpool 2] × 3 -> average pool to 4×4 -> dropout -> linear

With ``augment`` (training only) each clip gets white noise at a random SNR of 10–40 dB and its
log mel spectrogram one frequency mask (up to 8 bands) and one time mask (up to 12 frames) —
SpecAugment (Park et al. 2019) — so the classifier judges what was said rather than how clean
the recording is. It still sees only real training audio.
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
from vqvae.metrics.audio import log_mel
from vqvae.nets.modes import eval_mode
from vqvae.serialization import Pretrained


@dataclass
class LogMelClassifierConfig:
    sample_rate: int = 8000
    num_classes: int = 10
    n_fft: int = 256  # 32 ms at 8 kHz
    hop: int = 80  # 10 ms at 8 kHz
    n_mels: int = 40
    width: int = 32  # channels of the first block (doubled in each of the next two)
    dropout: float = 0.3
    augment: bool = True  # training only: noise and SpecAugment masks (see the module doc)

    def __post_init__(self) -> None:
        check_classifier_config(self, ("sample_rate", "n_fft", "hop", "n_mels", "width"))


class LogMelClassifier(Pretrained, nn.Module):
    config_class = LogMelClassifierConfig

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

    def _augmented_features(self, waves: Tensor) -> Tensor:
        """Features of noisy copies of ``waves`` with one frequency and one time mask each.
        Draws from torch's global generator (seeded by the training loop)."""
        b = len(waves)
        rms = waves.pow(2).mean(-1, keepdim=True).sqrt()  # (B, 1)
        snr_db = 10 + 30 * torch.rand(b, 1, device=waves.device)
        noisy = waves + torch.randn_like(waves) * rms * 10 ** (-snr_db / 20)
        feats = self.features(noisy)  # (B, 1, mels, frames)
        mels, frames = feats.shape[2], feats.shape[3]
        for size, width, dim in ((mels, 8, 2), (frames, 12, 3)):
            w = torch.randint(0, width + 1, (b,), device=feats.device)
            start = (torch.rand(b, device=feats.device) * (size - w + 1)).long()
            pos = torch.arange(size, device=feats.device)
            inside = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, size)
            shape = (b, 1, size, 1) if dim == 2 else (b, 1, 1, size)
            feats = feats.masked_fill(inside.view(shape), 0.0)  # 0 = the clip's mean
        return feats

    def training_losses(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        waves, labels = batch[0], require_labels(batch[1])
        if self.training and self.config.augment:
            logits = self.head(self.body(self._augmented_features(waves)))
        else:
            logits = self(waves)
        return classification_losses(logits, labels)

    @torch.no_grad()
    def predict(self, waves: Tensor, batch_size: int = 256) -> Tensor:
        """Predicted classes (N,) in eval mode."""
        with eval_mode(self):
            out = [
                self(waves[i : i + batch_size]).argmax(1) for i in range(0, len(waves), batch_size)
            ]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
