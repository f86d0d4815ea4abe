"""Fréchet distance against closed forms for Gaussians, and its estimate from samples."""

import numpy as np
import pytest
import scipy.linalg

from vqvae.metrics import feature_statistics, frechet_distance, frechet_distance_of_features


def random_cov(rng, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_diagonal_covariances_closed_form() -> None:
    # d² = |m1 - m2|² + Σ (σ1 + σ2 - 2 sqrt(σ1 σ2)) = |m1 - m2|² + Σ (sqrt σ1 - sqrt σ2)²
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 1 + 0 + 9 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected)


def test_matches_the_sqrtm_formula_for_general_covariances() -> None:
    rng = np.random.default_rng(0)
    c1, c2 = random_cov(rng, 6), random_cov(rng, 6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    cross = scipy.linalg.sqrtm(c1 @ c2).real
    expected = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * cross)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(m2, c2, m1, c1) == pytest.approx(expected, rel=1e-8)  # symmetric


def test_identical_gaussians_are_at_distance_zero_and_scaling() -> None:
    rng = np.random.default_rng(1)
    c = random_cov(rng, 5)
    m = rng.normal(size=5)
    assert frechet_distance(m, c, m, c) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N(0, s² I) in d dims: d (1 - s)²
    assert frechet_distance(np.zeros(4), np.eye(4), np.zeros(4), 9 * np.eye(4)) == pytest.approx(16)


def test_estimate_from_samples_converges() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, size=(20000, 3))
    b = rng.normal(0.5, 2.0, size=(20000, 3))
    expected = 3 * 0.25 + 3 * (1 - 2) ** 2
    assert frechet_distance_of_features(a, b) == pytest.approx(expected, rel=0.03)
    mean, cov = feature_statistics(a)
    assert mean.shape == (3,) and cov.shape == (3, 3)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 4)))
