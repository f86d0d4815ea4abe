"""nearest_code against an independent NumPy computation, on both searches: the fused native
kernel (quantizers/native.py, where this machine can build it) and the PyTorch search."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqvae.quantizers import native, nearest_code
from vqvae.quantizers.core import nearest_index


@pytest.fixture(params=["native", "torch"], autouse=True)
def search(request, monkeypatch):
    """Every test here runs on each search: the native kernel, and PyTorch's (the fallback)."""
    if request.param == "native" and native.library() is None:
        pytest.skip("the fused native search cannot be built here (no C++ compiler or OpenMP)")
    if request.param == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    return request.param


def numpy_nearest(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    # Independent reference: explicit broadcasted differences in float64, no expansion trick.
    d = ((z[:, None, :].astype(np.float64) - codebook[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1), d.min(1)


@pytest.mark.parametrize("k", [64, 512])  # 512: the grouped row minimum
def test_matches_numpy_argmin(k):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 16)).astype(np.float32)
    codebook = rng.normal(size=(k, 16)).astype(np.float32)
    idx, dist = nearest_code(torch.from_numpy(z), torch.from_numpy(codebook))
    ref_idx, ref_dist = numpy_nearest(z, codebook)
    # float32 expansion ||z||² - 2z·e + ||e||² can swap near-ties; random Gaussian data has
    # none closer than ~1e-3, far above float32 rounding (~1e-5 here), so indices must match.
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-4, atol=1e-4)


def test_chunking_gives_same_answer():
    g = torch.Generator().manual_seed(1)
    z, codebook = torch.randn(1000, 8, generator=g), torch.randn(300, 8, generator=g)
    full, _ = nearest_code(z, codebook)
    chunked, _ = nearest_code(z, codebook, max_elements=300 * 7)  # MIN_ROWS (256) rows a chunk
    assert torch.equal(full, chunked)


def test_cpu_float32_search_equals_the_float64_search():
    # float32 on CPU: the native kernel, or the product as a 1×1 convolution (oneDNN); float64:
    # torch.addmm.
    g = torch.Generator().manual_seed(2)
    z, codebook = torch.randn(777, 64, generator=g), torch.randn(512, 64, generator=g)
    conv, _ = nearest_code(z, codebook)
    exact, _ = nearest_code(z.double(), codebook.double())
    assert torch.equal(conv, exact)
    assert torch.equal(nearest_index(z, codebook), conv)  # the training path: indices only


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected z"):
        nearest_code(torch.randn(4, 3), torch.randn(5, 4))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(2, 40),
    d=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(n, k, d, seed):
    rng = np.random.default_rng(seed)
    codebook = rng.normal(size=(k, d)).astype(np.float32)
    # Inputs are codes plus small noise, so the true nearest code is unambiguous.
    pick = rng.integers(0, k, size=n)
    z = codebook[pick] + 1e-3 * rng.normal(size=(n, d)).astype(np.float32)
    idx, _ = nearest_code(torch.from_numpy(z), torch.from_numpy(codebook))
    ref_idx, ref_dist = numpy_nearest(z, codebook)
    # Where two codes are (nearly) identical either is correct: compare distances there.
    d_ours = ((z - codebook[idx.numpy()]) ** 2).sum(1)
    np.testing.assert_allclose(d_ours, ref_dist, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [256, 512, 4096, 300, 64])  # grouped row minimum, and the fallback
def test_row_minimum_matches_numpy_including_ties(k):
    """The grouped row minimum returns the first index of the minimum, as NumPy's argmin does,
    also when a row's minimum appears twice (in one group and in different groups)."""
    from vqvae.quantizers.core import _row_min

    rng = np.random.default_rng(k)
    d = rng.standard_normal((50, k)).astype(np.float32)
    d[0, [3, 5]] = -100.0  # tie inside a group
    d[1, [k - 1, 7]] = -100.0  # tie across groups: the first one wins
    d[2, :] = 1.0  # all equal
    values, indices = _row_min(torch.from_numpy(d))
    np.testing.assert_array_equal(indices.numpy(), d.argmin(1))
    np.testing.assert_array_equal(values.numpy(), d.min(1))
