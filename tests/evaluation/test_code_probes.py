"""Probes from code sequences: bag-of-codes features, chance level, and a probe that finds a
planted signal and stays near chance without one."""

from __future__ import annotations

import numpy as np
import pytest

from vqvae.evaluation.probes import chance_accuracy, code_bag, probe_accuracy


def test_code_bag_counts_fractions():
    bag = code_bag(np.array([[0, 0, 2, 3], [1, 1, 1, 1]]), 4)
    np.testing.assert_array_equal(bag, [[0.5, 0, 0.25, 0.25], [0, 1, 0, 0]])
    assert code_bag(np.zeros((2, 3, 5), int), 2).shape == (2, 2)  # any index-map shape
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        code_bag(np.array([[4]]), 4)


def test_chance_is_the_majority_class_rate():
    assert chance_accuracy(np.array([0, 1, 1, 2]), np.array([1, 1, 0, 2])) == 0.5


def test_probe_finds_planted_codes_and_not_absent_ones():
    rng = np.random.default_rng(0)
    n, k, t = 600, 32, 40
    labels = rng.integers(0, 4, n)
    codes = rng.integers(0, k, (n, t))
    codes[:, :5] = labels[:, None] * 2  # class c uses code 2c often
    bags = code_bag(codes, k)
    acc = probe_accuracy(bags[:400], labels[:400], bags[400:], labels[400:])
    assert acc > 0.95
    noise = code_bag(rng.integers(0, k, (n, t)), k)
    acc = probe_accuracy(noise[:400], labels[:400], noise[400:], labels[400:])
    assert acc < 0.45  # chance is about 0.25
    with pytest.raises(ValueError, match="two classes"):
        probe_accuracy(bags[:10], np.zeros(10, int), bags[10:20], labels[10:20])
