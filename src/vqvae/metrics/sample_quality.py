"""Sample quality: the Fréchet distance between two feature distributions.

Heusel et al. 2017 (FID): fit a Gaussian to each set of features and report

    d² = ||μ₁ − μ₂||² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

the squared 2-Wasserstein distance between the two Gaussians. ``tr((Σ₁ Σ₂)^{1/2})`` is computed
from symmetric eigen-decompositions — it equals ``tr((Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})``, the sum of
square roots of the eigenvalues of a symmetric PSD matrix — so it is real and stable without
``sqrtm``'s complex round-off. The features are those of a classifier trained on the same data
(the usual substitute for Inception features on MNIST-like images).
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, F) -> mean (F,) and unbiased covariance (F, F), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, F), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(
    mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray
) -> float:
    """Fréchet distance d² between N(mean1, cov1) and N(mean2, cov2) (see the module doc)."""
    mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape or cov1.shape != mean1.shape * 2:
        raise ValueError(
            f"shapes do not match: means {mean1.shape}, {mean2.shape}; "
            f"covariances {cov1.shape}, {cov2.shape}"
        )
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    d2 = float(np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)
    return max(d2, 0.0)


def frechet_distance_of_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets a (N, F) and b (M, F)."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))
