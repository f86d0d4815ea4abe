"""The MLP VQ-VAE for plain vectors: shapes, round trip, save/load, and codes that recover a
known cluster structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import homogeneity_score, v_measure_score

from vqvae.errors import ConfigError
from vqvae.models.vectors import VectorVQVAE, VectorVQVAEConfig
from vqvae.quantizers import QuantizerConfig
from vqvae.training import ShuffledBatches, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def clusters(n_per: int = 200, k: int = 6, dim: int = 12, seed: int = 0):
    """k Gaussian blobs (std 1) with centres ~N(0, 8²) in ``dim`` dimensions, plus an offset
    and scale per feature that standardisation must undo."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + rng.normal(size=(len(labels), dim))
    x = x * rng.uniform(0.1, 10, size=dim) + rng.uniform(-50, 50, size=dim)
    order = rng.permutation(len(x))
    return x[order].astype(np.float32), labels[order]


def model(dim: int, codes: int = 1, k: int = 8, **q) -> VectorVQVAE:
    torch.manual_seed(0)
    qc = QuantizerConfig(codebook_size=k, dim=4, **q)
    return VectorVQVAE(VectorVQVAEConfig(input_dim=dim, codes=codes, hidden=64, quantizer=qc))


def test_codes_recover_known_clusters():
    x, labels = clusters()
    m = model(x.shape[1])
    m.set_normalization(x)
    batches = ShuffledBatches((torch.from_numpy(x),), 128, seed=0)
    fit(
        m,
        batches,
        TrainConfig(steps=300, batch_size=128, lr=3e-3, warmup_steps=10),
        show_progress=False,
    )
    codes = m.encode(torch.from_numpy(x))[:, 0].numpy()
    # Every code holds points of one cluster (homogeneity), and the partition as a whole agrees
    # with the clusters (v-measure; 1 = identical up to renaming, and a split cluster costs).
    assert homogeneity_score(labels, codes) > 0.97
    assert v_measure_score(labels, codes) > 0.85
    x_hat = m.reconstruct(torch.from_numpy(x)).numpy()
    # Reconstruction in data units: far better than predicting the mean, per feature.
    assert (((x_hat - x) ** 2).mean(0) < 0.2 * x.var(0)).all()


@pytest.mark.parametrize("codes", [1, 3])
def test_shapes_round_trip_and_save_load(tmp_path, codes):
    x, _ = clusters(n_per=20, dim=5)
    m = model(5, codes=codes)
    m.set_normalization(x)
    m.training_losses((torch.from_numpy(x),))
    m.eval()
    t = torch.from_numpy(x[:7])
    idx = m.encode(t)
    assert idx.shape == (7, codes)
    assert torch.equal(m(t).reconstruction, m.decode_indices(idx))
    assert m.bits_per_vector == codes * 3
    m.save_pretrained(tmp_path / "m")
    again = VectorVQVAE.from_pretrained(tmp_path / "m")
    assert torch.equal(again.mean, m.mean) and torch.equal(again.std, m.std)
    assert torch.equal(again.reconstruct(t), m.reconstruct(t))


def test_residual_codes_and_errors():
    m = model(5, codes=2, kind="residual", levels=3)
    m.set_normalization(np.random.default_rng(0).normal(size=(10, 5)))
    idx = m.encode(torch.randn(4, 5))
    assert idx.shape == (4, 3, 2)
    assert m.decode_indices(idx).shape == (4, 5)
    with pytest.raises(ValueError, match=r"\(B, 3, 2\)"):
        m.decode_indices(idx[:, 0])
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        m.encode(torch.randn(4, 6))
    with pytest.raises(ConfigError, match="model.codes"):
        VectorVQVAEConfig(codes=0)


def test_constant_features_do_not_divide_by_zero():
    m = model(3)
    data = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0]])
    m.set_normalization(data)
    assert m.std.tolist() == [pytest.approx(np.std([1.0, 3.0], ddof=1)), 1.0, 1.0]
