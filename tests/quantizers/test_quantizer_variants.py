"""Every quantizer of the family against an independent NumPy computation: outputs are codebook
entries (or FSQ grid points), indices are the reference argmin (argmax of cosine similarity,
argmin in the projected space, per residual level, FSQ bin digits); state changes only in
training; dead-code reset revives a constructed collapse without NaN/inf; k-means init beats
random init."""

import numpy as np
import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.quantizers import (
    FSQ,
    CosineVectorQuantizer,
    EMAVectorQuantizer,
    LowDimQuantizer,
    ResidualVectorQuantizer,
    SimVQ,
    VectorQuantizer,
)

K, D = 16, 6


def plain(**kw):
    kw.setdefault("kmeans_init", False)
    kw.setdefault("dead_code_threshold", 0.0)
    return kw


BUILDERS = {
    "vq": lambda **kw: VectorQuantizer(K, D, **plain(**kw)),
    "ema": lambda **kw: EMAVectorQuantizer(K, D, **plain(**kw)),
    "cosine": lambda **kw: CosineVectorQuantizer(K, D, **plain(**kw)),
    "rotation": lambda **kw: VectorQuantizer(K, D, gradient="rotation", **plain(**kw)),
    "lowdim": lambda **kw: LowDimQuantizer(D, EMAVectorQuantizer(K, 3, **plain(**kw))),
    "residual": lambda **kw: ResidualVectorQuantizer(
        [EMAVectorQuantizer(K, D, **plain(**kw)) for _ in range(3)]
    ),
    "fsq": lambda **kw: FSQ((3, 4, 2), D),
    "simvq": lambda **kw: SimVQ(K, D, **plain(**kw)),
}
CODEBOOK_KINDS = ["vq", "ema", "cosine", "rotation", "lowdim", "residual", "simvq"]


def build(name, **kw):
    torch.manual_seed(0)
    return BUILDERS[name](**kw)


def sqdist(a, b):
    """(N, D), (K, D) -> (N, K) squared distances, float64, explicit differences."""
    return ((a[:, None, :].astype(np.float64) - b[None].astype(np.float64)) ** 2).sum(-1)


def linear(layer, x):
    return x.astype(np.float64) @ layer.weight.detach().double().numpy().T + (
        layer.bias.detach().double().numpy()
    )


def reference(q, flat):
    """Independent indices for input rows ``flat`` (N, D): (N,) or (N, L) for residual."""
    if isinstance(q, LowDimQuantizer):
        return reference(q.inner, linear(q.project_in, flat))
    if isinstance(q, ResidualVectorQuantizer):
        residual, out = flat.astype(np.float64), []
        for level in q.levels:
            book = level.codebook.detach().double().numpy()
            idx = sqdist(residual, book).argmin(1)
            out.append(idx)
            residual = residual - book[idx]
        return np.stack(out, 1)
    if isinstance(q, CosineVectorQuantizer):
        book = q.codebook.detach().double().numpy()
        z = flat.astype(np.float64)
        cos = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (
            book / np.linalg.norm(book, axis=1, keepdims=True)
        ).T
        return cos.argmax(1)
    if isinstance(q, FSQ):
        u = np.tanh(linear(q.project_in, flat))
        levels = np.array(q.levels)
        digits = np.clip(np.floor((u + 1) * levels / 2), 0, levels - 1).astype(np.int64)
        basis = np.cumprod([1, *q.levels[:-1]])
        return (digits * basis).sum(1)
    return sqdist(flat, plain_codebook(q)).argmin(1)


def plain_codebook(q):
    """(K, D) float64: the codebook, for SimVQ its frozen basis times the learned map."""
    if isinstance(q, SimVQ):
        return q.basis.double().numpy() @ q.linear.weight.detach().double().numpy().T
    return q.codebook.detach().double().numpy()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_indices_match_numpy_and_outputs_are_codes(name):
    q = build(name).eval()
    z = torch.randn(3, D, 5, 4)  # (B, D, H, W)
    out = q(z)
    levels = q.index_levels
    assert out.quantized.shape == z.shape
    assert out.indices.shape == ((3, levels, 5, 4) if levels else (3, 5, 4))
    flat = z.movedim(1, -1).reshape(-1, D).numpy()
    got = out.indices.movedim(1, -1).reshape(-1, levels) if levels else out.indices.flatten()
    # Gaussian inputs leave no near-ties at float32 resolution, so the indices must match.
    np.testing.assert_array_equal(got.numpy(), reference(q, flat))
    # The output is exactly what the indices name (bit for bit), ...
    assert torch.equal(out.quantized, q.lookup(out.indices))
    # ... and what they name is a codebook entry (or grid point), checked independently.
    rows = out.quantized.detach().movedim(1, -1).reshape(-1, D).double().numpy()
    np.testing.assert_allclose(rows, expected_rows(q, got.numpy()), rtol=1e-5, atol=1e-6)


def expected_rows(q, idx):
    if isinstance(q, LowDimQuantizer):
        return linear(q.project_out, expected_rows(q.inner, idx))
    if isinstance(q, ResidualVectorQuantizer):
        books = [level.codebook.detach().double().numpy() for level in q.levels]
        return sum(book[idx[:, l]] for l, book in enumerate(books))
    if isinstance(q, FSQ):
        levels = np.array(q.levels)
        digits = (idx[:, None] // np.cumprod([1, *q.levels[:-1]])) % levels
        return linear(q.project_out, (2 * digits + 1) / levels - 1)
    book = plain_codebook(q)
    if isinstance(q, CosineVectorQuantizer):
        book = book / np.linalg.norm(book, axis=1, keepdims=True)
    return book[idx]


def test_fsq_with_matching_dim_outputs_grid_points():
    fsq = FSQ((5, 4, 3), 3).eval()  # D = d: no projections, the output is the grid itself
    out = fsq(3 * torch.randn(4, 3, 6, 6))
    for c, n in enumerate((5, 4, 3)):
        values = out.quantized[:, c].unique()
        grid = torch.tensor([(2 * i + 1) / n - 1 for i in range(n)])
        assert all(torch.isclose(v, grid, atol=0).any() for v in values), (c, values)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_state_changes_only_in_training(name):
    q = build(name, dead_code_threshold=0.5, kmeans_init=name != "fsq")
    names = {n for n, _ in q.named_parameters()}
    assert not any(n.endswith(("cluster_size", "embed_sum", "usage")) for n in names)
    if name in ("ema", "lowdim", "residual"):  # EMA codebooks are buffers, not parameters
        assert not any(n.endswith("codebook") for n in names)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q.eval()
    for _ in range(2):
        q(torch.randn(4, D, 5, 5))
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k
    if name == "fsq":
        return  # no state at all
    q.train()
    q(torch.randn(4, D, 5, 5))
    changed = {k for k, v in q.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.endswith("initialized") for k in changed)  # k-means ran in training
    if name in ("ema", "lowdim", "residual"):
        assert any(k.endswith("cluster_size") for k in changed)
        assert any(k.endswith("embed_sum") for k in changed)


def codebook_levels(q):
    """The CodebookQuantizers inside ``q`` and the dimension their search runs in."""
    if isinstance(q, LowDimQuantizer):
        return codebook_levels(q.inner)
    if isinstance(q, ResidualVectorQuantizer):
        return list(q.levels)
    return [q]


@pytest.mark.parametrize("name", CODEBOOK_KINDS)
def test_reset_revives_codes_after_collapse(name):
    q = build(name, dead_code_threshold=0.5, usage_decay=0.5).train()
    levels = codebook_levels(q)
    d = levels[0].dim
    with torch.no_grad():  # collapse: every code the same vector, far from the data
        for level in levels:
            level._set_codes(torch.ones(K, dtype=torch.bool), torch.full((K, d), 100.0))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, D, 16, 16, generator=g)  # 512 vectors spread in every direction
    q.eval()
    assert len(first_level(q(x).indices).unique()) == 1  # collapsed: ties all go to one code
    q.train()
    # Level l > 1 of a residual stack revives from residuals of the steps before level l - 1
    # revived, so it needs a few more steps than a single codebook.
    for _ in range(30):
        q(x)
    for t in q.state_dict().values():
        assert torch.isfinite(t.float()).all()
    q.eval()
    used = [len(row.unique()) for row in level_rows(q(x).indices, q.index_levels)]
    assert min(used) >= 0.75 * K, used  # revived on every level


def first_level(indices):
    return indices[:, 0] if indices.dim() == 4 else indices


def level_rows(indices, levels):
    return [indices[:, l] for l in range(levels)] if levels else [indices]


def clustered(n_clusters=K, per=32, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 5 * torch.randn(n_clusters, d, generator=g)
    x = centres.repeat_interleave(per, 0) + 0.1 * torch.randn(n_clusters * per, d, generator=g)
    return x.T.reshape(1, d, -1)  # (1, D, N)


@pytest.mark.parametrize("name", ["vq", "ema", "cosine", "residual", "simvq"])
def test_kmeans_init_beats_random_init_on_clustered_data(name):
    x = clustered()

    def error(kmeans_init):
        q = build(name, kmeans_init=kmeans_init).train()
        q(x)  # the first training batch initialises the codebook
        q.eval()
        target = x if name != "cosine" else torch.nn.functional.normalize(x, dim=1)
        return float((q(x).quantized - target).pow(2).mean())

    assert error(True) < 0.5 * error(False)
    assert error(True) < 0.05


def test_recent_pool_is_a_transient_buffer_spanning_several_batches():
    q = build("ema", dead_code_threshold=0.1, recent_size=64).train()  # health every 4th step
    saved = set(q.state_dict())
    buffers = dict(q.named_buffers())
    for name in ("recent", "recent_seen", "steps"):
        assert name in buffers  # a training checkpoint can carry them
        assert name not in saved  # a saved model does not
    batches = [torch.full((1, D, 16), float(i)) for i in range(16)]  # batch i: all values i
    for x in batches:
        q(x)
    assert int(q.steps) == 16
    assert int(q.recent_seen) == 4 * 16  # a quarter of the capacity on every 4th step
    assert set(q.recent[:, 0].tolist()) == {0.0, 4.0, 8.0, 12.0}  # the last four such batches


def test_health_is_looked_after_every_few_steps():
    q = build("ema", dead_code_threshold=0.5, usage_decay=0.5, health_every=3).train()
    x = torch.randn(2, D, 8, 8)
    q(x)  # step 0: k-means init and a health step
    resets = []
    q._set_codes = lambda which, vectors: resets.append(int(q.steps) - 1)  # the step resetting
    q.usage.zero_()  # every code dead from here on
    for _ in range(7):  # steps 1-7
        q(x)
        q.usage.zero_()
    assert resets == [3, 6]
    with pytest.raises(ConfigError, match="health_every"):
        build("ema", health_every=0)


def test_dead_threshold_is_a_fraction_of_the_uniform_share():
    # K = 4 codes, N = 100 vectors per step: the uniform share is 25, threshold 0.1 -> 2.5.
    vq = VectorQuantizer(
        4, 2, kmeans_init=False, dead_code_threshold=0.1, usage_decay=0.0, health_every=1
    )
    book = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-50.0, -50.0]])
    vq._set_codes(torch.ones(4, dtype=torch.bool), book)
    x = torch.cat([book[0].repeat(60, 1), book[1].repeat(37, 1), book[2].repeat(3, 1)])
    x = (x + 0.01 * torch.randn(100, 2)).T[None]  # (1, D, 100): code 2 used 3 times, code 3 never
    vq.train()
    vq(x)  # usage (decay 0) = this step's counts: [60, 37, 3, 0]
    vq(x)  # starts by resetting codes below 2.5 per step: code 3 only
    assert torch.equal(vq.codebook.detach()[:3], book[:3])
    assert vq.codebook.detach()[3].norm() < 11  # moved onto the data


def test_step_counter_and_initialised_flag_follow_restores():
    # The quantizer keeps both values in Python between steps (no tensor read per step); a
    # checkpoint restore or a state load writes the buffers, and the next step must use them.
    from vqvae.training.checkpoint import restore_transient_buffers

    q = build("ema", kmeans_init=True, dead_code_threshold=0.5, health_every=4).train()
    x = torch.randn(2, D, 4, 4)
    q(x)
    q(x)
    assert int(q.steps) == 2 and q.initialized
    resets = []
    reset = q._reset_dead_codes
    q._reset_dead_codes = lambda per_step: resets.append(int(q.steps) - 1) or reset(per_step)
    restore_transient_buffers(q, {"buffer.steps": torch.tensor(12)})  # as a resumed run does
    q(x)  # step 12: a health step (step 2 would not be)
    assert int(q.steps) == 13 and resets == [12]
    inits = []
    q._init_codebook = lambda flat, per_step: inits.append(per_step)
    q.load_state_dict(build("ema", kmeans_init=True).state_dict())  # initialized = 0 again
    q(x)
    assert inits == [2 * 4 * 4]
