"""Models: the VQ-VAE, the hierarchical VQ-VAE-2, the Gaussian VAE baseline, the 1D (audio)
and MLP (vector) VQ-VAEs, and the small classifiers used to score samples; their configs and
save/load."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vqvae import serialization
from vqvae.errors import CheckpointError
from vqvae.models.audio import AudioVQVAE, AudioVQVAEConfig
from vqvae.models.classifier import ClassifierConfig, ImageClassifier
from vqvae.models.vae import GaussianVAE, VAEConfig
from vqvae.models.vectors import VectorVQVAE, VectorVQVAEConfig
from vqvae.models.vqvae import VQVAE, VQVAEConfig, VQVAEOutput
from vqvae.models.vqvae2 import VQVAE2, VQVAE2Config, VQVAE2Output

ModelConfig = VQVAEConfig | VQVAE2Config | VAEConfig | AudioVQVAEConfig | VectorVQVAEConfig
_MODELS: dict[type, type[nn.Module]] = {
    VQVAEConfig: VQVAE,
    VQVAE2Config: VQVAE2,
    VAEConfig: GaussianVAE,
    AudioVQVAEConfig: AudioVQVAE,  # kind "audio": 1D, audio and other sequences
    VectorVQVAEConfig: VectorVQVAE,  # kind "mlp": plain vectors
}


def build_model(config: ModelConfig) -> VQVAE | VQVAE2 | GaussianVAE:
    """The model a ``model`` config section describes (its ``kind``: vqvae, vqvae2, vae, audio
    or mlp)."""
    return _MODELS[type(config)](config)


def load_model(directory: str | Path, map_location: str = "cpu") -> VQVAE | VQVAE2 | GaussianVAE:
    """Load whichever model family a folder holds."""
    name = serialization.saved_type(directory)
    for cls in _MODELS.values():
        if cls.__name__ == name:
            return cls.from_pretrained(directory, map_location)
    raise CheckpointError(f"{directory}: holds a {name!r}, not a VQ-VAE, VQ-VAE-2 or VAE")


__all__ = [
    "VQVAE",
    "VQVAE2",
    "AudioVQVAE",
    "AudioVQVAEConfig",
    "ClassifierConfig",
    "GaussianVAE",
    "ImageClassifier",
    "ModelConfig",
    "VAEConfig",
    "VQVAE2Config",
    "VQVAE2Output",
    "VQVAEConfig",
    "VQVAEOutput",
    "VectorVQVAE",
    "VectorVQVAEConfig",
    "build_model",
    "load_model",
]
