"""Evaluation that needs more than a formula: the classifiers that judge samples and
reconstructions (image CNN, log-mel CNN, cached per dataset) and linear probes of the codes.
The pure metric functions (PSNR, SSIM, codebook health, NLL, Fréchet distance) are in
``vqvae.metrics``."""

from vqvae.evaluation.audio_classifier import LogMelClassifier, LogMelClassifierConfig
from vqvae.evaluation.image_classifier import (
    ClassifierConfig,
    ImageClassifier,
    features_and_predictions,
)
from vqvae.evaluation.scores import (
    audio_classifier,
    class_accuracy,
    image_classifier,
    image_sample_scores,
    probe_scores,
)

__all__ = [
    "ClassifierConfig",
    "ImageClassifier",
    "LogMelClassifier",
    "LogMelClassifierConfig",
    "audio_classifier",
    "class_accuracy",
    "features_and_predictions",
    "image_classifier",
    "image_sample_scores",
    "probe_scores",
]
