"""Models: the VQ-VAE, the hierarchical VQ-VAE-2, the Gaussian VAE baseline, the 1D (audio)
and MLP (vector) VQ-VAEs; their configs, save/load and the registry of model kinds."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vqvae import serialization
from vqvae.errors import CheckpointError
from vqvae.models.audio import AudioVQVAE, AudioVQVAEConfig
from vqvae.models.vae import GaussianVAE, VAEConfig
from vqvae.models.vectors import VectorVQVAE, VectorVQVAEConfig
from vqvae.models.vqvae import VQVAE, VQVAEConfig, VQVAEOutput
from vqvae.models.vqvae2 import VQVAE2, VQVAE2Config, VQVAE2Output
from vqvae.registry import Registry

ModelConfig = VQVAEConfig | VQVAE2Config | VAEConfig | AudioVQVAEConfig | VectorVQVAEConfig

# model.kind -> the model class (its config dataclass is ``config_class``, whose ``kind`` field
# names it). The pipeline's stages for each kind are in vqvae.pipeline.families.
MODELS: Registry[type[nn.Module]] = Registry("model family")
MODELS.register("vqvae", VQVAE)
MODELS.register("vqvae2", VQVAE2)
MODELS.register("vae", GaussianVAE)
MODELS.register("audio", AudioVQVAE)  # 1D: audio and other sequences
MODELS.register("mlp", VectorVQVAE)  # plain vectors


def build_model(config: ModelConfig) -> nn.Module:
    """The model a ``model`` config section describes (its ``kind`` picks the class)."""
    return MODELS.get(config.kind, "model.kind")(config)


def load_model(directory: str | Path, map_location: str = "cpu") -> nn.Module:
    """Load whichever registered model a folder holds."""
    name = serialization.saved_type(directory)
    cls = MODELS.find(lambda cls: cls.__name__ == name)
    if cls is None:
        raise CheckpointError(f"{directory}: holds a {name!r}, not a model of vqvae.models.MODELS")
    return cls.from_pretrained(directory, map_location)


__all__ = [
    "MODELS",
    "VQVAE",
    "VQVAE2",
    "AudioVQVAE",
    "AudioVQVAEConfig",
    "GaussianVAE",
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
