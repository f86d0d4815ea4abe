"""The codebook family: drop-in ``nn.Module`` quantizers around one nearest-code core."""

from vqvae.quantizers.config import QuantizerConfig, build_quantizer
from vqvae.quantizers.core import nearest_code
from vqvae.quantizers.kmeans import kmeans
from vqvae.quantizers.vq import (
    CodebookQuantizer,
    EMAVectorQuantizer,
    QuantizerOutput,
    VectorQuantizer,
    perplexity_of,
)

__all__ = [
    "CodebookQuantizer",
    "EMAVectorQuantizer",
    "QuantizerConfig",
    "QuantizerOutput",
    "VectorQuantizer",
    "build_quantizer",
    "kmeans",
    "nearest_code",
    "perplexity_of",
]
