"""Autoregressive priors over maps of VQ code indices, and the shared sampling routine."""

from vqvae.priors.pixelcnn import GatedPixelCNN, PixelCNNConfig
from vqvae.priors.sampling import filter_logits, sample_from_logits

__all__ = ["GatedPixelCNN", "PixelCNNConfig", "filter_logits", "sample_from_logits"]
