"""Finite scalar quantization: values on the grid, index <-> grid point bijection, the paper's
recommended level sets, and the config rules for its codebook size."""

import math

import numpy as np
import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.quantizers import (
    FSQ,
    RECOMMENDED_LEVELS,
    QuantizerConfig,
    build_quantizer,
    fsq_levels_for,
)


def grid_axis(n):
    return np.array([(2 * i + 1) / n - 1 for i in range(n)])  # centres of n equal bins of (-1, 1)


def test_values_lie_on_the_grid():
    levels = (8, 5, 5, 5)
    fsq = FSQ(levels, 4).eval()  # D = d: no projection
    out = fsq(4 * torch.randn(3, 4, 7, 7))
    q = out.quantized.movedim(1, -1).reshape(-1, 4).numpy()
    for c, n in enumerate(levels):
        dist = np.abs(q[:, c, None] - grid_axis(n)[None]).min(1)
        assert dist.max() < 1e-7, c


def test_index_code_bijection():
    levels = (3, 4, 2)
    fsq = FSQ(levels, 3).eval()
    k = math.prod(levels)
    all_idx = torch.arange(k)[:, None]  # (K, 1): index maps of one position
    points = fsq.lookup(all_idx)[..., 0]  # (K, 3)
    assert torch.equal(points, fsq.grid_points())
    assert len(torch.unique(points, dim=0)) == k  # distinct points: lookup is injective
    # Feeding each point back (through atanh, the inverse of the bound) gives its own index.
    back = fsq(torch.atanh(points)[..., None]).indices[:, 0]
    assert torch.equal(back, torch.arange(k))


def test_bins_have_equal_width_and_cover_every_level():
    fsq = FSQ((4,), 1).eval()
    u = torch.linspace(-0.999, 0.999, 2001)  # the bounded value tanh(z)
    idx = fsq(torch.atanh(u)[:, None]).indices
    expected = np.clip(np.floor((u.numpy() + 1) * 2), 0, 3)
    np.testing.assert_array_equal(idx.numpy(), expected)
    assert set(idx.tolist()) == {0, 1, 2, 3}


def test_gradient_is_straight_through_the_rounding():
    fsq = FSQ((5, 5), 2).train()
    z = torch.randn(1, 2, 4, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(fsq(z).quantized.sum(), z)
    torch.testing.assert_close(grad, 1 - torch.tanh(z.detach()) ** 2)  # d tanh, rounding skipped


def test_recommended_level_sets_match_their_size():
    for bits, levels in RECOMMENDED_LEVELS.items():
        assert 0.9 < math.log2(math.prod(levels)) / bits < 1.1
        assert min(levels) >= 5  # the paper recommends at least 5 levels per channel


@pytest.mark.parametrize("k", [2, 8, 16, 240, 512, 1000, 1024, 2048, 4096, 8192, 64000, 2**20])
def test_derived_levels_have_exactly_k_points(k):
    levels = fsq_levels_for(k)
    assert math.prod(levels) == k
    assert k < 16 or min(levels) >= 4  # no starved channels once there is room


def test_no_derived_levels_for_other_sizes():
    assert fsq_levels_for(600) is None and fsq_levels_for(1) is None


def test_config_derives_levels_or_requires_matching_size():
    cfg = QuantizerConfig(kind="fsq", codebook_size=1000)
    fsq = build_quantizer(cfg)
    assert isinstance(fsq, FSQ) and fsq.levels == (8, 5, 5, 5) and fsq.codebook_size == 1000
    fsq = build_quantizer(QuantizerConfig(kind="fsq", codebook_size=512, fsq_levels=(8, 8, 8)))
    assert fsq.levels == (8, 8, 8)
    assert build_quantizer(QuantizerConfig(kind="fsq", codebook_size=1024)).levels == (8, 8, 4, 4)
    with pytest.raises(ConfigError, match=r"model.quantizer.codebook_size .*fsq_levels"):
        QuantizerConfig(kind="fsq", codebook_size=600)
    with pytest.raises(ConfigError, match=r"model.quantizer.codebook_size must equal .* 1000"):
        QuantizerConfig(kind="fsq", codebook_size=512, fsq_levels=(8, 5, 5, 5))
    with pytest.raises(ConfigError, match="model.quantizer.fsq_levels must all be >= 2"):
        QuantizerConfig(kind="fsq", codebook_size=8, fsq_levels=(8, 1))
    with pytest.raises(ConfigError, match="model.quantizer.fsq_levels applies to kind = 'fsq'"):
        QuantizerConfig(kind="ema", fsq_levels=(8, 8, 8))
    with pytest.raises(ConfigError, match="model.quantizer.gradient"):
        QuantizerConfig(kind="fsq", codebook_size=1000, gradient="rotation")
    with pytest.raises(ConfigError, match="model.quantizer.lookup_dim"):
        QuantizerConfig(kind="fsq", codebook_size=1000, lookup_dim=4)


def test_wrong_shapes_and_indices_rejected():
    fsq = FSQ((3, 3), 4)
    with pytest.raises(ValueError, match="expected input"):
        fsq(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="indices must lie"):
        fsq.lookup(torch.tensor([[9]]))
    with pytest.raises(ConfigError, match="levels"):
        FSQ((4, 1), 4)
