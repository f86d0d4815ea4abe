"""scikit-learn's bundled 8x8 digits (no download needed): a tiny dataset for quick runs."""

from __future__ import annotations

import numpy as np

from vqvae.data.common import ImageSet, split_set
from vqvae.data.schemes import Scheme, path_only, register_scheme

# The digits have no official split; a fixed one keeps results comparable between runs.
DIGITS_TEST_COUNT = 300
DIGITS_MAX_VALUE = 16  # pixel values are counts 0..16 of a 4x4 block of the original 32x32


def load_digits_splits() -> tuple[ImageSet, ImageSet]:
    """(train, test) of the 1797 digits as float32 (N, 1, 8, 8) in [0, 1], labels 0..9.

    Test: the last 300 entries of the seed-0 permutation (see ``split_indices``).
    """
    # Imported lazily: scikit-learn takes about a second to import.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / DIGITS_MAX_VALUE).astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    class_names = [str(d) for d in range(10)]
    return split_set(
        images, labels, "digits", class_names=class_names, test_count=DIGITS_TEST_COUNT
    )


register_scheme(Scheme("digits", None, path_only(lambda _: load_digits_splits())))
