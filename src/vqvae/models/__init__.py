"""Models: the VQ-VAE, its config and its save/load."""

from vqvae.models.vqvae import VQVAE, VQVAEConfig, VQVAEOutput

__all__ = ["VQVAE", "VQVAEConfig", "VQVAEOutput"]
