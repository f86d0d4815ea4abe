"""Encoder/decoder building blocks: 2D (images), 1D (audio, sequences) and MLP (vectors)."""

from vqvae.nets.conv1d import Decoder1d, Encoder1d
from vqvae.nets.conv2d import Decoder2d, Encoder2d, ResidualStack
from vqvae.nets.mlp import MLPDecoder, MLPEncoder

__all__ = [
    "Decoder1d",
    "Decoder2d",
    "Encoder1d",
    "Encoder2d",
    "MLPDecoder",
    "MLPEncoder",
    "ResidualStack",
]
