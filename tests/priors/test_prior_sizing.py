"""Priors sized to the codes: sizes left None follow the code grid and K (``fitted_config``),
sizes that are set are kept, a prior built by hand with None sizes gets release 0.1's fixed
defaults, and the fitted PixelCNN's receptive field covers the whole past of every position."""

import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.priors import (
    GatedPixelCNN,
    PixelCNNConfig,
    TransformerPrior,
    TransformerPriorConfig,
    pixelcnn,
    transformer,
)


def fit_pixelcnn(grid, k=512, items=None, **sizes):
    return GatedPixelCNN.fitted_config(
        PixelCNNConfig(**sizes), grid=grid, codebook_size=k, num_classes=0, train_items=items
    )


def fit_transformer(grid, k=512, items=None, **sizes):
    return TransformerPrior.fitted_config(
        TransformerPriorConfig(**sizes),
        grid=grid,
        codebook_size=k,
        num_classes=0,
        train_items=items,
    )


def test_a_tiny_grid_gets_a_small_pixelcnn_and_a_large_grid_a_deeper_one():
    small, large = fit_pixelcnn((2, 2)), fit_pixelcnn((16, 16))
    assert (small.channels, small.layers, small.kernel_size) == (16, 2, 3)
    assert large.layers > small.layers and large.channels > small.channels
    assert large.layers * (large.kernel_size // 2) >= 15  # reaches 15 rows up
    # Never above release 0.1's default, which a 32×32 map of 512 codes gets.
    big = fit_pixelcnn((32, 32))
    assert (big.channels, big.layers, big.kernel_size) == (128, 12, 5)
    for grid in [(1, 1), (2, 2), (7, 7), (13, 13), (14, 14), (64, 64)]:
        c = fit_pixelcnn(grid)
        assert 8 <= c.channels <= 128 and 2 <= c.layers <= 12 and c.kernel_size in (3, 5)


def test_a_small_data_set_gets_a_narrower_prior():
    digits = fit_pixelcnn((2, 2), items=1497)  # the built-in digits' training maps
    assert (digits.channels, digits.layers, digits.kernel_size) == (8, 2, 3)
    prior = GatedPixelCNN(digits)
    assert sum(p.numel() for p in prior.parameters()) <= 2 * 1497 * 4
    mnist = fit_pixelcnn((7, 7), items=60_000)  # plenty of data: the grid's size is kept
    assert mnist.channels == fit_pixelcnn((7, 7)).channels == 64
    assert fit_transformer((2, 2), items=100).dim < fit_transformer((7, 7), items=60_000).dim


def test_channels_grow_with_k():
    assert fit_pixelcnn((7, 7), k=16).channels < fit_pixelcnn((7, 7), k=4096).channels


@pytest.mark.parametrize("grid", [(2, 2), (3, 5), (6, 6)])
def test_the_fitted_receptive_field_covers_exactly_the_raster_past(grid):
    """Independent of the sizing formula: the gradient of the logits at each position reaches
    the code embeddings of every earlier position (and of no later one)."""
    torch.manual_seed(0)
    prior = GatedPixelCNN(fit_pixelcnn(grid, k=8)).double()
    h, w = grid
    indices = torch.randint(8, (1, h, w))
    seen = {}
    prior.embedding.register_forward_hook(lambda m, i, out: seen.update(emb=out))
    for t in range(h * w):
        prior.zero_grad()
        logits = prior(indices)  # (1, K, H, W)
        seen["emb"].retain_grad()
        i, j = divmod(t, w)
        logits[0, :, i, j].square().sum().backward()
        reached = seen["emb"].grad[0].abs().sum(-1).flatten() > 0  # (H·W,)
        assert reached.tolist() == [s < t for s in range(h * w)], (grid, t)


def test_set_sizes_are_kept_and_the_others_fitted():
    fixed = fit_pixelcnn((2, 2), channels=128, layers=12, kernel_size=5)
    assert (fixed.channels, fixed.layers, fixed.kernel_size) == (128, 12, 5)
    partial = fit_pixelcnn((2, 2), layers=5)
    assert (partial.channels, partial.layers, partial.kernel_size) == (16, 5, 3)
    t = fit_transformer((2, 2), dim=96)
    assert t.dim == 96 and 96 % t.heads == 0
    t = fit_transformer((2, 2), heads=3)
    assert t.heads == 3 and t.dim % 3 == 0
    t = fit_transformer((7, 7), dim=128, heads=4, layers=4)
    assert (t.dim, t.heads, t.layers) == (128, 4, 4)


def test_the_transformer_follows_the_context():
    small, seq = fit_transformer((2, 2)), fit_transformer((384,))
    assert (small.dim, small.heads, small.layers) == (16, 1, 2)
    assert (seq.dim, seq.heads, seq.layers) == (128, 4, 4) and seq.layout == "1d"
    assert fit_transformer((7, 7)).layers > small.layers


def test_fitting_does_not_touch_the_callers_config():
    config = PixelCNNConfig()
    fit_pixelcnn((4, 4))
    GatedPixelCNN.fitted_config(config, grid=(4, 4), codebook_size=16, num_classes=0)
    assert config.channels is None and config.layers is None and config.kernel_size is None


def test_a_prior_built_by_hand_with_no_sizes_gets_the_fixed_defaults(tmp_path):
    prior = GatedPixelCNN(PixelCNNConfig(codebook_size=16))
    c = prior.config
    assert {n: getattr(c, n) for n in pixelcnn.FIXED_SIZES} == pixelcnn.FIXED_SIZES
    assert len(prior.layers) == 12
    prior.save_pretrained(tmp_path / "p")
    loaded = GatedPixelCNN.from_pretrained(tmp_path / "p")
    assert loaded.config == c
    t = TransformerPrior(TransformerPriorConfig(codebook_size=16)).config
    assert {n: getattr(t, n) for n in transformer.FIXED_SIZES} == transformer.FIXED_SIZES


@pytest.mark.parametrize(
    "cls, bad",
    [
        (PixelCNNConfig, {"channels": 0}),
        (PixelCNNConfig, {"layers": 1.5}),
        (PixelCNNConfig, {"kernel_size": 4}),
        (PixelCNNConfig, {"kernel_size": 1}),
        (TransformerPriorConfig, {"dim": 30, "heads": 4}),
        (TransformerPriorConfig, {"heads": 0}),
    ],
)
def test_bad_sizes_are_refused(cls, bad):
    with pytest.raises(ConfigError):
        cls(**bad)
