"""Causality and "no blind spot" of the gated PixelCNN, checked by perturbation in float64.

Method: for a random index map x, build a batch holding x and, for each position q, a copy of x
with the code at q changed (two different replacements, so a change that happens to cancel out
cannot hide a dependency). One forward pass of that batch gives, for every pair (q, p), whether
changing q changes the logits at p: ``dep[q, p]``. Positions are numbered in raster order
(q = i * W + j). Float64 makes every real dependency a clearly nonzero difference, and a position
outside a convolution's window contributes exactly nothing, so "no dependency" is an exact 0.

The checker itself is validated on two broken models (a leaky first layer and a naive masked-conv
PixelCNN with a blind spot), so these tests are known to be able to fail.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vqvae.priors import GatedPixelCNN, PixelCNNConfig

H = W = 8
K = 7


def dependency_matrix(
    model: nn.Module, height: int = H, width: int = W, seed: int = 0
) -> torch.Tensor:
    """dep[q, p] (bool, (H*W, H*W)): does changing the code at q change the logits at p?"""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, K, (height, width), generator=g)
    batch = [base]
    for shift in (1, 3):
        for q in range(height * width):
            x = base.clone()
            x.view(-1)[q] = (x.view(-1)[q] + shift) % K
            batch.append(x)
    with torch.no_grad():
        out = model(torch.stack(batch)).double()  # (1 + 2HW, K, H, W)
    diff = (out[1:] - out[:1]).abs().amax(dim=1).reshape(2, height * width, height * width)
    return (diff > 0).any(dim=0)  # (q, p)


def tiny(layers: int = 4, kernel_size: int = 3, seed: int = 0) -> GatedPixelCNN:
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(codebook_size=K, channels=16, layers=layers, kernel_size=kernel_size)
    return GatedPixelCNN(cfg).double().eval()


def raster(i: int, j: int, width: int = W) -> int:
    return i * width + j


def causality_violations(dep: torch.Tensor) -> list[tuple[int, int]]:
    """Pairs (q, p) with q at or after p in raster order although p depends on q."""
    n = dep.shape[0]
    later = torch.arange(n)[:, None] >= torch.arange(n)[None, :]
    return [tuple(t) for t in (dep & later).nonzero().tolist()]


@pytest.mark.parametrize("layers,kernel_size", [(4, 3), (2, 5), (1, 3)])
def test_logits_depend_only_on_the_raster_past(layers: int, kernel_size: int) -> None:
    # Every p (all 64 positions, corners included) against every q >= p, p itself included.
    dep = dependency_matrix(tiny(layers, kernel_size))
    assert causality_violations(dep) == []


def test_receptive_field_is_exactly_the_expected_region() -> None:
    # With kernel 3 (r = 1) and L layers, p = (i, j) sees rows i-1-L*r .. i-1 at columns
    # j-L*r .. j+L*r (vertical stack: no blind spot, above-right included) and row i at columns
    # j-1-L*r .. j-1 (horizontal stack). Nothing else.
    layers, r = 4, 1
    dep = dependency_matrix(tiny(layers, 3))
    for i in range(H):
        for j in range(W):
            expected = torch.zeros(H, W, dtype=torch.bool)
            expected[
                max(0, i - 1 - layers * r) : i, max(0, j - layers * r) : j + layers * r + 1
            ] = True
            expected[i, max(0, j - 1 - layers * r) : j] = True
            assert torch.equal(dep[:, raster(i, j)].reshape(H, W), expected), (i, j)


def test_no_blind_spot_every_earlier_position_matters() -> None:
    # Kernel 5 and 4 layers reach 8 columns either side and 9 rows up: on 8x8 every q < p must
    # change the logits at p, for every p, e.g. (1, 0) depends on (0, 7).
    dep = dependency_matrix(tiny(4, 5))
    for p in range(H * W):
        missing = [divmod(q, W) for q in range(p) if not dep[q, p]]
        assert missing == [], f"p={divmod(p, W)} ignores {missing}"


@pytest.mark.parametrize("i,j", [(4, 3), (5, 1), (7, 4), (2, 2)])
def test_above_right_positions_matter(i: int, j: int) -> None:
    # The positions a naive masked-conv PixelCNN never sees (its blind spot).
    dep = dependency_matrix(tiny(4, 3))
    for di, dj in [(1, 1), (1, 2), (2, 3), (1, 3), (2, 2)]:
        q = (i - di, j + dj)
        assert dep[raster(*q), raster(i, j)], f"logits at {(i, j)} ignore {q}"


# ----------------------------------------------------------- the checker can fail


class NaiveMaskedPixelCNN(nn.Module):
    """The original PixelCNN: masked k×k convs (type A then B). It has a blind spot."""

    def __init__(self, layers: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(K, 8)
        self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(layers))
        self.out = nn.Conv2d(8, K, 1)
        for n, conv in enumerate(self.convs):
            mask = torch.ones(3, 3)
            mask[1, 1 if n == 0 else 2 :] = 0  # type A hides the centre, B keeps it
            mask[2:] = 0
            conv.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embedding(x).permute(0, 3, 1, 2)
        for conv in self.convs:
            h = torch.tanh(nn.functional.conv2d(h, conv.weight * conv.mask, conv.bias, padding=1))
        return self.out(h)


def test_checker_detects_the_blind_spot_of_a_naive_masked_pixelcnn() -> None:
    dep = dependency_matrix(NaiveMaskedPixelCNN().double())
    assert causality_violations(dep) == []  # causal ...
    assert not dep[raster(3, 6), raster(4, 4)]  # ... but blind to (i-1, j+2)
    assert not dep[raster(2, 7), raster(4, 4)]  # ... and to (i-2, j+3)


def test_checker_detects_a_leaky_first_layer() -> None:
    model = tiny(4, 3)
    model.layers[0].mask_type = "B"  # the first layer now sees the current code
    violations = causality_violations(dependency_matrix(model))
    assert (raster(3, 3), raster(3, 3)) in violations
