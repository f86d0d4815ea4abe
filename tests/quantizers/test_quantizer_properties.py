"""Property-based checks (hypothesis) over input shapes, K and D for every quantizer kind:
shapes, index ranges, the chosen code is a nearest one (codebook kinds; per level for
residual), the index round trip is exact, and training with every remedy on keeps all state
finite."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqvae.quantizers import QuantizerConfig, build_quantizer

KINDS = ["vq", "ema", "cosine", "residual", "lowdim", "fsq", "lfq", "bsq", "simvq"]


@st.composite
def setups(draw):
    kind = draw(st.sampled_from(KINDS))
    d = draw(st.integers(1, 12))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))
    batch = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    if kind == "fsq":
        levels = tuple(draw(st.lists(st.integers(2, 6), min_size=1, max_size=4)))
        cfg = QuantizerConfig(kind="fsq", dim=d, codebook_size=math.prod(levels), fsq_levels=levels)
    elif kind in ("lfq", "bsq"):
        cfg = QuantizerConfig(kind=kind, dim=d, codebook_size=2 ** draw(st.integers(1, 6)))
    else:
        k = draw(st.integers(2, 40))
        options = {"kind": kind, "codebook_size": k, "dim": d}
        if kind == "lowdim":
            options.update(kind="ema", lookup_dim=max(1, d // 2))
        if kind == "residual":
            options["levels"] = draw(st.integers(1, 3))
        cfg = QuantizerConfig(**options)
    return cfg, (batch, d, *spatial), seed


def nearest_distance(z, book):
    return ((z[:, None].astype(np.float64) - book[None].astype(np.float64)) ** 2).sum(-1).min(1)


def search_space(q):
    """(the CodebookQuantizers, input projection) for checking optimality, or None for FSQ."""
    inner, project = q, None
    if hasattr(q, "inner"):
        inner, project = q.inner, q.project_in
    if hasattr(inner, "levels") and isinstance(inner.levels, torch.nn.ModuleList):
        return list(inner.levels), project
    if hasattr(inner, "codebook_vectors"):
        return [inner], project
    return None, None


@settings(max_examples=40, deadline=None)
@given(setups())
def test_eval_shapes_ranges_optimality_round_trip(setup):
    cfg, shape, seed = setup
    torch.manual_seed(seed)
    q = build_quantizer(cfg).eval()
    z = torch.randn(shape)
    out = q(z)
    levels = q.index_levels
    assert out.quantized.shape == z.shape
    assert out.indices.shape == (shape[0], levels, *shape[2:]) if levels else shape[:1] + shape[2:]
    assert out.indices.min() >= 0 and out.indices.max() < q.codebook_size
    assert torch.equal(q.lookup(out.indices), out.quantized)
    assert out.code_counts.sum() == out.indices.numel()

    books, project = search_space(q)
    if books is None:
        return
    flat = z.movedim(1, -1).reshape(-1, cfg.dim)
    with torch.no_grad():
        flat = project(flat) if project is not None else flat
    idx = out.indices.movedim(1, -1).reshape(-1, levels) if levels else out.indices.reshape(-1, 1)
    residual = flat.double().numpy()
    for l, level in enumerate(books):
        x = residual
        if cfg.kind == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        book = level.codebook_vectors().detach().double().numpy()
        chosen = ((x - book[idx[:, l].numpy()]) ** 2).sum(1)
        # A near-tie may go either way in float32: compare distances, not indices.
        np.testing.assert_allclose(chosen, nearest_distance(x, book), rtol=1e-4, atol=1e-5)
        residual = residual - book[idx[:, l].numpy()]


@settings(max_examples=25, deadline=None)
@given(setups())
def test_training_with_all_remedies_stays_finite(setup):
    cfg, shape, seed = setup
    torch.manual_seed(seed)
    q = build_quantizer(cfg).train()
    for _ in range(3):
        z = torch.randn(shape, requires_grad=True)
        out = q(z)
        (out.quantized.sum() + out.loss).backward()
        assert torch.isfinite(z.grad).all()
    for name, t in q.state_dict().items():
        assert torch.isfinite(t.float()).all(), name
