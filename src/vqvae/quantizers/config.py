"""The quantizer section of a model config, and the one place that turns it into a module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vqvae.errors import ConfigError
from vqvae.quantizers.vq import CodebookQuantizer, EMAVectorQuantizer, VectorQuantizer


@dataclass
class QuantizerConfig:
    kind: Literal["vq", "ema"] = "ema"  # gradient codebook, or EMA updates (paper appendix A.1)
    codebook_size: int = 512  # K
    dim: int = 64  # D
    beta: float = 0.25  # weight of the commitment term
    decay: float = 0.99  # EMA decay (kind = "ema")
    kmeans_init: bool = True  # k-means on the first training batch's encoder outputs
    dead_code_threshold: float = 0.03  # reset codes used less than this per step (0 = never)
    usage_decay: float = 0.99  # running-usage window ≈ 1 / (1 - usage_decay) steps

    def __post_init__(self) -> None:
        if self.codebook_size < 2:
            raise ConfigError(
                f"quantizer.codebook_size must be at least 2, got {self.codebook_size}"
            )
        if self.dim < 1:
            raise ConfigError(f"quantizer.dim must be at least 1, got {self.dim}")
        if self.beta < 0:
            raise ConfigError(f"quantizer.beta must be >= 0, got {self.beta}")
        if not 0 < self.decay < 1:
            raise ConfigError(f"quantizer.decay must be in (0, 1), got {self.decay}")
        if not 0 <= self.usage_decay < 1:
            raise ConfigError(f"quantizer.usage_decay must be in [0, 1), got {self.usage_decay}")
        if self.dead_code_threshold < 0:
            raise ConfigError(
                f"quantizer.dead_code_threshold must be >= 0, got {self.dead_code_threshold}"
            )


def build_quantizer(config: QuantizerConfig) -> CodebookQuantizer:
    common = dict(
        beta=config.beta,
        kmeans_init=config.kmeans_init,
        dead_code_threshold=config.dead_code_threshold,
        usage_decay=config.usage_decay,
    )
    if config.kind == "ema":
        return EMAVectorQuantizer(config.codebook_size, config.dim, decay=config.decay, **common)
    return VectorQuantizer(config.codebook_size, config.dim, **common)
