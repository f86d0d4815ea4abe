"""The small classifier behind the sample-quality metrics: it learns, and its features are the
penultimate layer."""

import pytest
import torch

from vqvae.evaluation import ClassifierConfig, ImageClassifier
from vqvae.evaluation.image_classifier import features_and_predictions
from vqvae.training import ShuffledBatches, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_classifier_learns_a_simple_task_and_exposes_features(tmp_path) -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (96,))
    x = torch.zeros(96, 1, 12, 12)
    for i, c in enumerate(labels):
        x[i, 0, 4 * c : 4 * c + 3] = 1.0  # class c: a bar at rows 4c..4c+2
    model = ImageClassifier(ClassifierConfig(num_classes=3, width=4, feature_dim=8, dropout=0.0))
    cfg = TrainConfig(steps=80, batch_size=32, lr=1e-2, warmup_steps=5)
    fit(model, ShuffledBatches((x, labels), 32), cfg, show_progress=False)
    feats, pred = features_and_predictions(model, x)
    assert feats.shape == (96, 8) and feats.dtype == torch.float64
    assert (pred == labels).float().mean() > 0.95
    assert torch.allclose(model.head(feats.float()).argmax(1), pred)
    loaded = ImageClassifier.from_pretrained(model.save_pretrained(tmp_path / "clf"))
    assert torch.equal(features_and_predictions(loaded, x)[1], pred)
