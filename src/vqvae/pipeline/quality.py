"""Measured sample quality: a small classifier trained on the run's dataset scores samples.

``sample_quality`` draws N samples (balanced over the classes for a conditional prior), then
reports, in the classifier's penultimate-layer feature space:

* ``sample_frechet``: the Fréchet distance between the samples and the real test images;
* ``real_frechet``: the same distance for N real *training* images — the floor that N
  perfect samples would reach (the estimate is biased upwards for small N);
* ``sample_class_accuracy`` (conditional priors): how often the classifier assigns a sample to
  the class it was drawn for.

The classifier is trained once per dataset and image size and cached (config.json +
model.safetensors + classifier.json) in RUN/classifier/ or in a folder given by the caller, so
several runs (e.g. a VQ-VAE and its Gaussian VAE baseline) can share one feature space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vqvae.data import DataSplits
from vqvae.errors import VQVAEError
from vqvae.metrics import frechet_distance_of_features
from vqvae.models import ClassifierConfig, ImageClassifier
from vqvae.models.classifier import features_and_predictions
from vqvae.pipeline import classifier_cache, plots
from vqvae.pipeline.generation import Model, SampleOptions, _tensor, generate, num_classes
from vqvae.pipeline.run import RunDir
from vqvae.training import TrainConfig

CLASSIFIER_TRAIN = TrainConfig(
    steps=1200, batch_size=64, lr=2e-3, warmup_steps=50, log_every=100, checkpoint_every=0
)


def load_or_train_classifier(
    directory: str | Path, data: DataSplits, show_progress: bool = True
) -> tuple[ImageClassifier, float]:
    """The cached classifier for ``data`` in ``directory`` (trained first if missing or made
    for other data) and its test-split accuracy."""
    made_for = {"data": data.spec, "image_size": data.height, "channels": data.channels}

    def train() -> tuple[ImageClassifier, float]:
        classifier_cache.require_labels(data, "sample quality needs labelled data")
        config = ClassifierConfig(
            in_channels=data.channels, num_classes=int(data.train.num_classes)
        )
        model = classifier_cache.fit_classifier(
            lambda: ImageClassifier(config),
            _tensor(data.train.images),
            torch.from_numpy(data.train.labels.astype(np.int64)),
            CLASSIFIER_TRAIN,
            show_progress,
        )
        model.eval()
        _, pred = features_and_predictions(model, _tensor(data.test.images))
        return model, float((pred.numpy() == data.test.labels).mean())

    return classifier_cache.load_or_train(
        directory, made_for, ImageClassifier.from_pretrained, train
    )


def sample_quality(
    run: RunDir,
    model: Model,
    priors: list,
    data: DataSplits,
    n: int,
    *,
    classifier_dir: str | Path | None = None,
    options: SampleOptions | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, float]:
    """Draw ``n`` samples and score them (see the module docstring)."""
    if n < 2:
        raise VQVAEError(f"--samples must be >= 2 (a covariance needs two samples), got {n}")
    options = options or SampleOptions()
    classifier, accuracy = load_or_train_classifier(
        classifier_dir or run.path / "classifier", data, show_progress
    )
    real, _ = features_and_predictions(classifier, _tensor(data.test.images))
    classes = num_classes(priors)
    labels = torch.arange(n) % classes if classes else None
    g = torch.Generator().manual_seed(seed)
    images = generate(model, priors, n, labels, options, g)
    fake, predicted = features_and_predictions(classifier, images)
    pick = np.random.default_rng(seed).permutation(len(data.train))[:n]
    train_feats, _ = features_and_predictions(classifier, _tensor(data.train.images[pick]))
    metrics: dict[str, float] = {
        "sample_frechet": frechet_distance_of_features(fake.numpy(), real.numpy()),
        "real_frechet": frechet_distance_of_features(train_feats.numpy(), real.numpy()),
        "sample_count": n,
        "classifier_test_accuracy": accuracy,
    }
    if labels is not None:
        metrics["sample_class_accuracy"] = float((predicted == labels).float().mean())
    if options.guidance_scale is not None:
        metrics["sample_guidance_scale"] = options.guidance_scale
    if options.temperature != 1.0:
        metrics["sample_temperature"] = options.temperature
    per_row = 10 if classes == 0 else classes
    shown = images[: per_row * 10].numpy()
    rows = [shown[i : i + per_row] for i in range(0, len(shown), per_row)]
    plots.save_image_grid(run.path / "evaluate_samples.png", rows)
    return metrics
