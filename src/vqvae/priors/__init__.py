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
    "sample_from_logits",
]
