"""Encoder/decoder building blocks."""

from vqvae.nets.conv2d import Decoder2d, Encoder2d, ResidualStack

__all__ = ["Decoder2d", "Encoder2d", "ResidualStack"]
