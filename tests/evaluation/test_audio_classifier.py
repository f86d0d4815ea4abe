"""The log-mel classifier: augmentation only in training, a short run that learns separable
tones, save/load equality, input checks."""

from __future__ import annotations

import math

import pytest
import torch

from vqvae.evaluation.audio_classifier import LogMelClassifier, LogMelClassifierConfig
from vqvae.training import ShuffledBatches, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def tones(n_per: int = 16, classes: int = 3, length: int = 1600):
    t = torch.arange(length) / 8000
    labels = torch.arange(classes).repeat_interleave(n_per)
    phase = torch.rand(len(labels), 1) * 6.28
    freq = 400.0 + 900.0 * labels[:, None]
    return 0.5 * torch.sin(2 * math.pi * freq * t + phase), labels


def small(**kw) -> LogMelClassifier:
    torch.manual_seed(0)
    return LogMelClassifier(LogMelClassifierConfig(num_classes=3, width=4, n_mels=16, **kw))


def test_augmentation_only_in_training():
    waves, labels = tones(2)
    m = small()
    m.eval()
    a = m.training_losses((waves, labels))["loss"]
    b = m.training_losses((waves, labels))["loss"]
    assert torch.equal(a, b)  # eval: no noise, no masks
    m.train()
    torch.manual_seed(1)
    feats = m._augmented_features(waves)
    clean = m.features(waves)
    assert feats.shape == clean.shape and not torch.allclose(feats, clean)
    assert (feats == 0).any()  # masked bands/frames are set to the clip's mean (0)


def test_short_run_learns_tones_and_save_load(tmp_path):
    waves, labels = tones()
    m = small()
    batches = ShuffledBatches((waves, labels), 16, seed=0)
    cfg = TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup_steps=2, log_every=40)
    fit(m, batches, cfg, show_progress=False)
    test_waves, test_labels = tones(4)
    assert (m.predict(test_waves) == test_labels).float().mean() > 0.9
    m.save_pretrained(tmp_path / "c")
    again = LogMelClassifier.from_pretrained(tmp_path / "c")
    m.eval()
    assert torch.equal(again(test_waves), m(test_waves))


def test_input_checks():
    m = small()
    assert m(torch.zeros(2, 1, 800)).shape == (2, 3)  # (B, 1, T) is accepted too
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(torch.zeros(2, 2, 800))
