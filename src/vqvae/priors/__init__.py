"""Autoregressive priors over maps of VQ code indices, and the shared sampling routine."""

from vqvae.priors.base import AutoregressivePrior
from vqvae.priors.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqvae.priors.sampling import filter_logits, sample_from_logits
from vqvae.priors.transformer import TransformerPrior, TransformerPriorConfig

__all__ = [
    "AutoregressivePrior",
    "GatedPixelCNN",
    "PixelCNNConfig",
    "TransformerPrior",
    "TransformerPriorConfig",
    "filter_logits",
    "load_prior",
    "sample_from_logits",
]


def load_prior(directory, map_location="cpu") -> AutoregressivePrior:
    """Load whichever prior a folder holds (``GatedPixelCNN`` or ``TransformerPrior``)."""
    from vqvae import serialization
    from vqvae.errors import CheckpointError

    name = serialization.saved_type(directory)
    for cls in (GatedPixelCNN, TransformerPrior):
        if cls.__name__ == name:
            return cls.from_pretrained(directory, map_location)
    raise CheckpointError(f"{directory}: holds a {name!r}, not a prior")
