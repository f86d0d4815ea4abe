"""Scores that need a trained judge: a classifier of the run's own data (cached per dataset,
``classifier_cache``) for samples and reconstructions, and linear probes of the codes.

* Images: ``image_sample_scores`` — the Fréchet distance between the classifier's penultimate
  features of samples and of the real test images (``sample_frechet``), the same for as many
  real training images (``real_frechet``, the floor at this N; biased upwards for small N),
  and for class-conditional samples how often the classifier agrees with the class asked for.
* Audio: a log-mel classifier's accuracy on reconstructions (intelligibility) and samples.
* Codes: ``probe_scores`` — logistic regression from bags of codes to each labelling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae.evaluation import classifier_cache
from vqvae.evaluation.audio_classifier import LogMelClassifier, LogMelClassifierConfig
from vqvae.evaluation.image_classifier import (
    ClassifierConfig,
    ImageClassifier,
    features_and_predictions,
)
from vqvae.evaluation.probes import chance_accuracy, code_bag, probe_accuracy
from vqvae.metrics import frechet_distance_of_features
from vqvae.training import TrainConfig, as_float

IMAGE_CLASSIFIER_TRAIN = TrainConfig(
    steps=1200, batch_size=64, lr=2e-3, warmup_steps=50, log_every=100, checkpoint_every=0
)
AUDIO_CLASSIFIER_TRAIN = TrainConfig(
    steps=1000, batch_size=64, lr=2e-3, warmup_steps=50, log_every=100, checkpoint_every=0
)


def image_classifier(
    directory: str | Path, data: Any, show_progress: bool = True
) -> tuple[ImageClassifier, float]:
    """The cached image classifier for ``data`` (``DataSplits``) in ``directory``, trained
    first if missing or made for other data, and its test-split accuracy."""

    def build() -> ImageClassifier:
        classes = int(data.train.num_classes)
        return ImageClassifier(ClassifierConfig(in_channels=data.channels, num_classes=classes))

    made_for = {"data": data.spec, "image_size": data.height, "channels": data.channels}
    return _cached_classifier(
        directory, data, made_for, build, ImageClassifier.from_pretrained, "images",
        IMAGE_CLASSIFIER_TRAIN, "sample quality needs labelled data", show_progress,
    )  # fmt: skip


def audio_classifier(
    directory: str | Path, data: Any, show_progress: bool = True
) -> tuple[LogMelClassifier, float]:
    """The cached log-mel classifier for ``data`` (``AudioSplits``) in ``directory``, trained
    on the real training clips first if missing or made for other data, and its accuracy on
    the real test clips."""

    def build() -> LogMelClassifier:
        classes = int(data.train.num_classes)
        return LogMelClassifier(LogMelClassifierConfig(data.sample_rate, num_classes=classes))

    made_for = {"data": data.spec, "sample_rate": data.sample_rate, "length": data.length}
    return _cached_classifier(
        directory, data, made_for, build, LogMelClassifier.from_pretrained, "waveforms",
        AUDIO_CLASSIFIER_TRAIN, "intelligibility needs labelled audio", show_progress,
    )  # fmt: skip


def _cached_classifier(
    directory, data, made_for, build, load, field, training, purpose, show_progress
):
    """The classifier in ``directory`` when it was made for ``made_for``, else ``build()``
    trained on the training split's ``field`` (images or waveforms) and labels; and its
    accuracy on the test split."""

    def train():
        classifier_cache.require_labels(data, purpose)
        model = classifier_cache.fit_classifier(
            build,
            as_float(getattr(data.train, field)),
            torch.from_numpy(data.train.labels.astype(np.int64)),
            training,
            show_progress,
        ).eval()
        return model, class_accuracy(model, getattr(data.test, field), data.test.labels)

    return classifier_cache.load_or_train(directory, made_for, load, train)


def class_accuracy(classifier: Any, inputs: np.ndarray, labels: np.ndarray) -> float:
    """How often ``classifier`` predicts ``labels`` for ``inputs``."""
    predicted = classifier.predict(as_float(inputs))
    return float((predicted.numpy() == np.asarray(labels)).mean())


def image_sample_scores(
    classifier: ImageClassifier,
    samples: torch.Tensor,
    labels: torch.Tensor | None,
    data: Any,
    seed: int,
) -> dict[str, float]:
    """``sample_frechet``, ``real_frechet`` and (given ``labels``) ``sample_class_accuracy``
    of ``samples`` (N, C, H, W) against ``data``'s test split."""
    n = len(samples)
    real, _ = features_and_predictions(classifier, as_float(data.test.images))
    fake, predicted = features_and_predictions(classifier, samples)
    pick = np.random.default_rng(seed).permutation(len(data.train))[:n]
    train, _ = features_and_predictions(classifier, as_float(data.train.images[pick]))
    scores = {
        "sample_frechet": frechet_distance_of_features(fake.numpy(), real.numpy()),
        "real_frechet": frechet_distance_of_features(train.numpy(), real.numpy()),
    }
    if labels is not None:
        scores["sample_class_accuracy"] = float((predicted == labels).float().mean())
    return scores


def probe_scores(
    train_codes: np.ndarray,
    test_codes: np.ndarray,
    codebook_size: int,
    targets: dict[str, tuple[np.ndarray | None, np.ndarray | None]],
) -> dict[str, float]:
    """``probe_<name>_accuracy`` and ``probe_<name>_chance`` for each labelling ``name`` ->
    (training labels, test labels) that has at least two classes."""
    scores: dict[str, float] = {}
    train_bag, test_bag = code_bag(train_codes, codebook_size), code_bag(test_codes, codebook_size)
    for name, (y_train, y_test) in targets.items():
        if y_train is None or y_test is None or len(np.unique(y_train)) < 2:
            continue
        scores[f"probe_{name}_accuracy"] = probe_accuracy(train_bag, y_train, test_bag, y_test)
        scores[f"probe_{name}_chance"] = chance_accuracy(y_train, y_test)
    return scores
