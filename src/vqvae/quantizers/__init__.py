"""The codebook family: drop-in ``nn.Module`` quantizers around one nearest-code core."""

from vqvae.quantizers.base import (
    Quantizer,
    QuantizerOutput,
    perplexity_of,
    rotation_trick,
    straight_through,
)
from vqvae.quantizers.config import QUANTIZERS, QuantizerConfig, build_quantizer
from vqvae.quantizers.core import nearest_code
from vqvae.quantizers.fsq import FSQ, RECOMMENDED_LEVELS, fsq_levels_for
from vqvae.quantizers.kmeans import kmeans
from vqvae.quantizers.lfq import BSQ, LFQ
from vqvae.quantizers.lowdim import LowDimQuantizer
from vqvae.quantizers.residual import ResidualVectorQuantizer
from vqvae.quantizers.vq import (
    CodebookQuantizer,
    CosineVectorQuantizer,
    EMAVectorQuantizer,
    SimVQ,
    VectorQuantizer,
)

__all__ = [
    "BSQ",
    "FSQ",
    "LFQ",
    "QUANTIZERS",
    "RECOMMENDED_LEVELS",
    "CodebookQuantizer",
    "CosineVectorQuantizer",
    "EMAVectorQuantizer",
    "LowDimQuantizer",
    "Quantizer",
    "QuantizerConfig",
    "QuantizerOutput",
    "ResidualVectorQuantizer",
    "SimVQ",
    "VectorQuantizer",
    "build_quantizer",
    "fsq_levels_for",
    "kmeans",
    "nearest_code",
    "perplexity_of",
    "rotation_trick",
    "straight_through",
]
