"""What discrete codes capture: simple probes from code sequences to attributes (digit, speaker).

A probe reads a bag of codes — each item's normalised code histogram (``code_bag``), which keeps
which codes occur and how often but not where — and fits a multinomial logistic regression on
the training split; its accuracy on the test split is compared with chance, the accuracy of
always answering the training split's most frequent class (``chance_accuracy``). A probe well
above chance shows the attribute is linearly readable from the codes.
"""

from __future__ import annotations

import numpy as np


def code_bag(indices: np.ndarray, codebook_size: int) -> np.ndarray:
    """Indices (N, *S) -> (N, K) float64: the fraction of each item's codes equal to k."""
    flat = np.asarray(indices, dtype=np.int64).reshape(len(indices), -1)
    if flat.size and (flat.min() < 0 or flat.max() >= codebook_size):
        raise ValueError(f"indices must lie in [0, {codebook_size})")
    rows = np.repeat(np.arange(len(flat)), flat.shape[1])
    bag = np.zeros((len(flat), codebook_size), dtype=np.float64)
    np.add.at(bag, (rows, flat.ravel()), 1.0)
    return bag / max(1, flat.shape[1])


def chance_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy on ``test_labels`` of always predicting the most frequent training label."""
    majority = np.bincount(np.asarray(train_labels, dtype=np.int64)).argmax()
    return float(np.mean(np.asarray(test_labels) == majority))


def probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    regularization: float = 1.0,
    seed: int = 0,
) -> float:
    """Test accuracy of a logistic-regression probe fitted on the (standardised) training
    features; ``regularization`` is the inverse L2 strength C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_labels)) < 2:
        raise ValueError("a probe needs at least two classes in the training labels")
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=regularization, max_iter=2000, random_state=seed),
    )
    probe.fit(train_features, train_labels)
    return float(np.mean(probe.predict(test_features) == test_labels))


def code_label_nmi(indices: np.ndarray, labels: np.ndarray) -> float:
    """Normalised mutual information between each item's code tuple (all of its indices taken
    together as one cluster id) and its label: 1 when the codes determine the labels and vice
    versa, 0 when they are independent."""
    from sklearn.metrics import normalized_mutual_info_score

    flat = np.asarray(indices).reshape(len(indices), -1)
    _, cluster = np.unique(flat, axis=0, return_inverse=True)
    return float(normalized_mutual_info_score(labels, cluster.ravel()))
