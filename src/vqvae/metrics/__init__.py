"""Metrics: pure functions of tensors (they import no models)."""

from vqvae.metrics.codebook import CodebookHealth, code_histogram, codebook_stats
from vqvae.metrics.image import psnr_from_mse, ssim
from vqvae.metrics.likelihood import bits_per_dim, nll_bits
from vqvae.metrics.sample_quality import (
    feature_statistics,
    frechet_distance,
    frechet_distance_of_features,
)

__all__ = [
    "CodebookHealth",
    "bits_per_dim",
    "code_histogram",
    "codebook_stats",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_of_features",
    "nll_bits",
    "psnr_from_mse",
    "ssim",
]
