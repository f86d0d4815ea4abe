"""Fixtures of the audio pipeline tests."""

from __future__ import annotations

import pytest
import torch

from vqvae.evaluation import scores
from vqvae.training import TrainConfig


@pytest.fixture
def small_and_single_threaded(monkeypatch):
    """One compute thread, and a digit classifier trained 20 steps (the intelligibility
    measure trains one on every evaluate of a new run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(
        scores,
        "AUDIO_CLASSIFIER_TRAIN",
        TrainConfig(steps=20, batch_size=16, lr=3e-3, warmup_steps=2, checkpoint_every=0),
    )
    yield
    torch.set_num_threads(threads)
