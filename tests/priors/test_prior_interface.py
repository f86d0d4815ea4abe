"""The one sampling interface of every prior: causality, cached == full decoding, top-k/top-p,
classifier-free guidance, completion, conditioning maps. Parametrised over every prior kind.

Exactness: models run in float64, so cached and recomputed logits agree to ~1e-15 and the same
generator gives the same draws (a draw could only differ if a uniform number fell within 1e-15
of a cumulative-probability boundary).
"""

from __future__ import annotations

import pytest
import torch

import vqvae.priors.base as base
from vqvae.errors import ConfigError
from vqvae.priors import (
    GatedPixelCNN,
    PixelCNNConfig,
    TransformerPrior,
    TransformerPriorConfig,
    filter_logits,
)

K = 6
COND_K = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def make(kind: str, num_classes: int = 0, label_dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(codebook_size=K, num_classes=num_classes, label_dropout=label_dropout)
    if kind.startswith("pixelcnn"):
        cond = COND_K if kind == "pixelcnn-cond" else 0
        cfg = PixelCNNConfig(channels=8, layers=3, kernel_size=3, cond_codebook_size=cond, **common)
        model = GatedPixelCNN(cfg)
    else:
        layout = "1d" if kind.startswith("transformer-1d") else "2d"
        everywhere = kind.endswith("label-everywhere")
        cfg = TransformerPriorConfig(
            dim=16, heads=2, layers=2, layout=layout, label_everywhere=everywhere, **common
        )
        model = TransformerPrior(cfg)
    return model.double().eval()


KINDS = [
    "pixelcnn",
    "pixelcnn-cond",
    "transformer",
    "transformer-1d",
    "transformer-1d-label-everywhere",
]


def grid_of(kind: str) -> tuple[int, ...]:
    return (14,) if kind.startswith("transformer-1d") else (4, 5)


def cond_for(kind: str, n: int, seed: int = 1) -> torch.Tensor | None:
    if kind != "pixelcnn-cond":
        return None
    return torch.randint(0, COND_K, (n, 2, 3), generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------- causality


def dependency_matrix(model, grid, cond=None, labels=None) -> torch.Tensor:
    """dep[q, p]: does changing the code at q (raster order) change the logits at p?"""
    n = torch.Size(grid).numel()
    base_codes = torch.randint(0, K, grid, generator=gen(3))
    batch = [base_codes]
    for shift in (1, 2):  # two replacements, so an accidental cancellation cannot hide a link
        for q in range(n):
            x = base_codes.clone()
            x.view(-1)[q] = (x.view(-1)[q] + shift) % K
            batch.append(x)
    b = len(batch)
    cond = None if cond is None else cond[:1].expand(b, *cond.shape[1:])
    labels = None if labels is None else labels[:1].expand(b)
    with torch.no_grad():
        out = model(torch.stack(batch), labels, cond).reshape(b, K, n)
    diff = (out[1:] - out[:1]).abs().amax(dim=1).reshape(2, n, n)
    # Batched float64 kernels may round different batch rows differently (~1e-16); a real
    # dependency changes logits by far more than 1e-9.
    return (diff > 1e-9).any(dim=0)


def violations(dep: torch.Tensor) -> list[tuple[int, int]]:
    n = dep.shape[0]
    later = torch.arange(n)[:, None] >= torch.arange(n)[None, :]  # q >= p
    return [tuple(t) for t in (dep & later).nonzero().tolist()]


@pytest.mark.parametrize("kind", KINDS)
def test_every_prior_is_causal(kind: str) -> None:
    # Changing position i changes no logits at positions <= i (raster order).
    model = make(kind, num_classes=3, label_dropout=0.1)
    grid = grid_of(kind)
    dep = dependency_matrix(model, grid, cond_for(kind, 1), torch.tensor([2]))
    assert violations(dep) == []
    # ... and the past is actually used: the last position depends on the one before it.
    n = dep.shape[0]
    assert dep[n - 2, n - 1]


def test_transformer_sees_the_whole_past() -> None:
    dep = dependency_matrix(make("transformer"), (4, 5))
    n = dep.shape[0]
    assert torch.equal(dep, torch.arange(n)[:, None] < torch.arange(n)[None, :])


def test_causality_check_catches_a_leaky_transformer() -> None:
    class Leaky(TransformerPrior):  # input t carries z_t instead of z_{t-1}
        def _inputs(self, codes, labels, pos, start, stop):
            return self.token(codes[:, start:stop]) + pos[start:stop]

    torch.manual_seed(0)
    leaky = Leaky(TransformerPriorConfig(codebook_size=K, dim=16, heads=2, layers=2)).double()
    assert (5, 5) in violations(dependency_matrix(leaky.eval(), (4, 5)))


def test_conditioning_map_reaches_every_position() -> None:
    model = make("pixelcnn-cond")
    x = torch.randint(0, K, (2, 4, 6), generator=gen(0))
    top = torch.randint(0, COND_K, (1, 2, 3), generator=gen(1)).expand(2, 2, 3).clone()
    top[1, 0, 0] = (top[1, 0, 0] + 1) % COND_K  # top code (0, 0) covers bottom rows 0-1, cols 0-1
    out = model(x[:1].expand(2, 4, 6), cond=top)
    changed = (out[0] - out[1]).abs().amax(0) > 0  # (H, W)
    assert changed[0, 0]  # the first position sees the conditioning map too
    assert changed[:2, :2].all()
    with pytest.raises(ConfigError, match="cond is required"):
        model(x)
    with pytest.raises(ConfigError, match="no conditioning"):
        make("pixelcnn")(x, cond=top)


def test_pixelcnn_without_new_options_keeps_its_weights_layout() -> None:
    # Saved priors from before label dropout and conditioning maps still load.
    model = make("pixelcnn", num_classes=3)
    keys = set(model.state_dict())
    assert not any(k.startswith("cond_") or ".cond_proj." in k for k in keys)
    assert model.layers[0].cond.weight.shape[0] == 3
    assert make("pixelcnn", num_classes=3, label_dropout=0.2).layers[0].cond.weight.shape[0] == 4


# ------------------------------------------------------- cached == recomputed


@pytest.mark.parametrize("kind", KINDS)
def test_cached_samples_equal_recomputed_samples(kind: str) -> None:
    model = make(kind, num_classes=3, label_dropout=0.1)
    grid = grid_of(kind)
    labels = torch.tensor([0, 1, 2])
    opts = dict(cond=cond_for(kind, 3), temperature=1.3)
    cached = model.sample(3, grid, labels, generator=gen(), **opts)
    full = model.sample(3, grid, labels, generator=gen(), cached=False, **opts)
    assert torch.equal(cached, full)
    assert not torch.equal(cached, model.sample(3, grid, labels, generator=gen(1), **opts))
    # with guidance and a prefix too (the cache then starts mid-map)
    opts.update(guidance_scale=2.0, prefix=cached[:, :1] if len(grid) == 2 else cached[:, :7])
    cached = model.sample(3, grid, labels, generator=gen(5), **opts)
    full = model.sample(3, grid, labels, generator=gen(5), cached=False, **opts)
    assert torch.equal(cached, full)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_samples_are_fixed_points_of_the_forward_pass(kind: str) -> None:
    # Temperature 0: each code is the argmax of logits computed from the codes before it; by
    # causality those equal the logits of one forward pass over the finished map.
    model = make(kind, num_classes=2)
    labels = torch.tensor([0, 1])
    cond = cond_for(kind, 2)
    for cached in (True, False):
        s = model.sample(2, grid_of(kind), labels, cond=cond, temperature=0.0, cached=cached)
        assert torch.equal(model(s, labels, cond).argmax(1), s)


def test_transformer_cache_gives_the_forward_logits_in_float32() -> None:
    model = make("transformer").float()
    codes = torch.randint(0, K, (2, 20), generator=gen(0))
    full = model(codes.reshape(2, 4, 5)).reshape(2, K, 20)
    dec = model._decoder(2, (4, 5), None, None, cached=True)
    first = dec.logits(codes, 7)  # a prefill of 8 positions, then one position at a time
    assert torch.allclose(first, full[:, :, 7], atol=1e-5)
    for t in range(8, 20):
        assert torch.allclose(dec.logits(codes, t), full[:, :, t], atol=1e-5), t


# -------------------------------------------------------------- top-k / top-p


@pytest.mark.parametrize("kind", ["pixelcnn", "transformer"])
@pytest.mark.parametrize("opts", [{"top_k": 2}, {"top_p": 0.5}, {"top_k": 3, "top_p": 0.7}])
def test_top_k_top_p_never_emit_a_filtered_code(kind: str, opts: dict, monkeypatch) -> None:
    seen = []
    draw = base.sample_from_logits

    def recording(logits, **kw):
        out = draw(logits, **kw)
        seen.append((logits.clone(), out.clone()))
        return out

    monkeypatch.setattr(base, "sample_from_logits", recording)
    model = make(kind)
    model.sample(16, (4, 5), temperature=2.0, generator=gen(), **opts)
    assert len(seen) == 20
    for logits, out in seen:
        allowed = torch.isfinite(filter_logits(logits / 2.0, **opts))  # (16, K)
        assert allowed.gather(1, out[:, None]).all()
        assert (allowed.sum(1) < K).all()  # the filter did remove codes


# ------------------------------------------------------ classifier-free guidance


@pytest.mark.parametrize("kind", KINDS)
def test_guidance_scale_zero_is_unconditional_and_one_is_conditional(kind: str) -> None:
    model = make(kind, num_classes=3, label_dropout=0.2)
    with torch.no_grad():  # untrained label embeddings barely matter: make them matter
        for emb in [getattr(layer, "cond", None) for layer in getattr(model, "layers", [])]:
            emb.weight.mul_(30)
        if hasattr(model, "start"):
            model.start.weight.mul_(100)
            model.head.weight.mul_(100)
    grid, labels, cond = grid_of(kind), torch.tensor([2, 0, 1, 1]), cond_for(kind, 4)
    for cached in (True, False):
        s0 = model.sample(
            4, grid, labels, guidance_scale=0.0, cond=cond, generator=gen(), cached=cached
        )
        uncond = model.sample(4, grid, None, cond=cond, generator=gen(), cached=cached)
        assert torch.equal(s0, uncond)
        s1 = model.sample(
            4, grid, labels, guidance_scale=1.0, cond=cond, generator=gen(), cached=cached
        )
        plain = model.sample(4, grid, labels, cond=cond, generator=gen(), cached=cached)
        assert torch.equal(s1, plain)
    assert not torch.equal(s0, s1)


def test_guidance_extrapolates_the_logits(monkeypatch) -> None:
    model = make("transformer", num_classes=3, label_dropout=0.2)
    seen = []
    monkeypatch.setattr(
        base, "sample_from_logits", lambda logits, **kw: seen.append(logits) or logits.argmax(-1)
    )
    model.sample(2, (2, 2), torch.tensor([1, 2]), guidance_scale=3.0)
    codes = torch.zeros(2, 4, dtype=torch.long)
    with torch.no_grad():
        cond = model(codes.reshape(2, 2, 2), torch.tensor([1, 2])).reshape(2, K, 4)[:, :, 0]
        uncond = model(codes.reshape(2, 2, 2), None).reshape(2, K, 4)[:, :, 0]
    assert torch.allclose(seen[0], uncond + 3.0 * (cond - uncond))


def test_guidance_errors() -> None:
    with pytest.raises(ConfigError, match="label dropout"):
        make("pixelcnn", num_classes=3).sample(1, (2, 2), 1, guidance_scale=2.0)
    with pytest.raises(ConfigError, match="needs labels"):
        make("pixelcnn", num_classes=3, label_dropout=0.1).sample(1, (2, 2), guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale"):
        make("pixelcnn", num_classes=3, label_dropout=0.1).sample(
            1, (2, 2), 1, guidance_scale=float("nan")
        )
    with pytest.raises(ConfigError, match="required"):  # no null class: labels are required
        make("transformer", num_classes=3).sample(1, (2, 2))


def test_label_dropout_replaces_labels_only_in_training() -> None:
    model = make("transformer", num_classes=3, label_dropout=0.999).float()
    codes = torch.randint(0, K, (8, 4, 5), generator=gen(0))
    labels = torch.randint(0, 3, (8,), generator=gen(1))
    with torch.no_grad():
        conditional = torch.nn.functional.cross_entropy(model(codes, labels), codes)
        unconditional = torch.nn.functional.cross_entropy(model(codes, None), codes)
        assert torch.allclose(model.eval().training_losses((codes, labels))["loss"], conditional)
        torch.manual_seed(0)
        dropped = model.train().training_losses((codes, labels))["loss"]
    assert torch.allclose(dropped, unconditional)
    assert not torch.allclose(conditional, unconditional)


# ------------------------------------------------------------------ completion


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cached", [True, False])
def test_completion_keeps_the_given_codes(kind: str, cached: bool) -> None:
    model = make(kind)
    grid = grid_of(kind)
    n = 5
    given = torch.randint(0, K, (n, *grid), generator=gen(7))
    prefix = given[:, :2] if len(grid) == 2 else given[:, :7]  # 2D: the top half, whole rows
    cond = cond_for(kind, n)
    out = model.sample(n, grid, prefix=prefix, cond=cond, generator=gen(), cached=cached)
    flat_prefix = prefix.reshape(n, -1)
    assert torch.equal(out.reshape(n, -1)[:, : flat_prefix.shape[1]], flat_prefix)
    # the rest is sampled, and it is the continuation of this prefix: greedy completion is a
    # fixed point of the forward pass at the sampled positions
    greedy = model.sample(n, grid, prefix=prefix, cond=cond, temperature=0.0, cached=cached)
    tail = slice(flat_prefix.shape[1], None)
    argmax = model(greedy, None, cond).reshape(n, K, -1).argmax(1)
    assert torch.equal(argmax[:, tail], greedy.reshape(n, -1)[:, tail])
    # a flat (n, L) prefix means the same as whole rows
    flat = model.sample(n, grid, prefix=flat_prefix, cond=cond, generator=gen(), cached=cached)
    assert torch.equal(flat, out)


def test_completion_errors() -> None:
    model = make("pixelcnn")
    with pytest.raises(ValueError, match="more than the grid"):
        model.sample(1, (2, 2), prefix=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model.sample(2, (2, 2), prefix=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="prefix codes"):
        model.sample(1, (2, 2), prefix=torch.full((1, 2), K))
    full = torch.randint(0, K, (1, 2, 2))
    assert torch.equal(model.sample(1, (2, 2), prefix=full), full)  # nothing left to draw
