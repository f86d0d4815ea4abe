"""The codebook quantizers: outputs, losses (β on the commitment term), straight-through
gradient, EMA only in training, k-means init, dead-code reset."""

import numpy as np
import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.quantizers import (
    EMAVectorQuantizer,
    QuantizerConfig,
    VectorQuantizer,
    build_quantizer,
    kmeans,
)

VARIANTS = [VectorQuantizer, EMAVectorQuantizer]


def make(cls, k=16, d=4, **kw):
    kw.setdefault("kmeans_init", False)
    kw.setdefault("dead_code_threshold", 0.0)
    torch.manual_seed(0)
    return cls(k, d, **kw)


@pytest.mark.parametrize("cls", VARIANTS)
def test_outputs_are_codebook_entries_and_nearest(cls):
    vq = make(cls).eval()
    z = torch.randn(3, 4, 5, 6)  # (B, D, H, W)
    out = vq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (3, 5, 6)
    flat = z.movedim(1, -1).reshape(-1, 4).numpy().astype(np.float64)
    book = vq.codebook.detach().numpy().astype(np.float64)
    ref = ((flat[:, None] - book[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(out.indices.flatten().numpy(), ref)
    q = out.quantized.movedim(1, -1).reshape(-1, 4)
    assert torch.equal(q, vq.codebook.detach()[out.indices.flatten()])  # exactly the codes


@pytest.mark.parametrize("cls", VARIANTS)
def test_lookup_round_trip(cls):
    vq = make(cls).eval()
    out = vq(torch.randn(2, 4, 3, 3))
    assert torch.equal(vq.lookup(out.indices), out.quantized)


def test_beta_weights_commitment_only():
    """d(commitment)/dz_e = 2β(z_e - e)/n; d(codebook)/de has no β. Pins β on the right term."""
    beta = 0.37
    vq = make(VectorQuantizer, beta=beta).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    e = vq.codebook.detach()[out.indices.flatten()].reshape(2, 3, 3, 4).movedim(-1, 1)
    n = z.numel()
    (g_commit,) = torch.autograd.grad(out.commitment_loss, z, retain_graph=True)
    torch.testing.assert_close(g_commit, 2 * beta * (z.detach() - e) / n)
    # The codebook term moves codes only, with weight 1, and sends no gradient to z_e.
    g_z, g_book = torch.autograd.grad(out.codebook_loss, [z, vq.codebook], allow_unused=True)
    assert g_z is None or torch.count_nonzero(g_z) == 0
    flat = z.detach().movedim(1, -1).reshape(-1, 4)
    expected = torch.zeros_like(vq.codebook)
    idx = out.indices.flatten()
    expected.index_add_(0, idx, 2 * (vq.codebook.detach()[idx] - flat) / n)
    torch.testing.assert_close(g_book, expected)
    # Swapping β onto the codebook term (the known bug) would break the first assertion.
    torch.testing.assert_close(out.commitment_loss, beta * ((z.detach() - e) ** 2).mean())


@pytest.mark.parametrize("cls", VARIANTS)
def test_straight_through_gradient(cls):
    vq = make(cls, beta=0.0).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    upstream = torch.randn_like(out.quantized)
    (g,) = torch.autograd.grad((out.quantized * upstream).sum(), z)
    assert torch.equal(g, upstream)  # identity: the gradient at z_q reaches z_e unchanged


@pytest.mark.parametrize("cls", VARIANTS)
def test_one_backward_through_codes_and_commitment(cls):
    # Straight-through and commitment share one autograd node: both terms, one pass.
    beta = 0.3
    vq = make(cls, beta=beta).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    e = out.quantized.detach()  # exactly the codes
    upstream = torch.randn_like(out.quantized)
    (g,) = torch.autograd.grad((out.quantized * upstream).sum() + 3 * out.commitment_loss, z)
    torch.testing.assert_close(g, upstream + 3 * 2 * beta * (z.detach() - e) / z.numel())


def test_ema_buffers_change_only_in_training():
    vq = make(EMAVectorQuantizer)
    assert not any(
        n in dict(vq.named_parameters()) for n in ("codebook", "cluster_size", "embed_sum")
    )
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.eval()
    vq(torch.randn(4, 4, 5, 5))
    for k, v in vq.state_dict().items():
        assert torch.equal(v, before[k]), k
    vq.train()
    vq(torch.randn(4, 4, 5, 5))
    assert not torch.equal(vq.codebook, before["codebook"])
    assert not torch.equal(vq.cluster_size, before["cluster_size"])


def test_ema_moves_codes_towards_assigned_mean():
    vq = make(EMAVectorQuantizer, k=2, d=2, decay=0.5).train()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vq.embed_sum.copy_(vq.codebook * vq.cluster_size[:, None])
    z = torch.tensor([[[[1.0], [1.0]], [[1.0], [1.0]]]])  # (1, D=2, 2, 1): two vectors (1, 1)
    vq(z)
    # N_0 = 0.5·1 + 0.5·2 = 1.5, m_0 = 0.5·0 + 0.5·(2, 2) = (1, 1) -> e_0 ≈ (2/3, 2/3)
    torch.testing.assert_close(vq.codebook[0], torch.tensor([2 / 3, 2 / 3]), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(vq.codebook[1], torch.tensor([10.0, 10.0]), rtol=1e-3, atol=1e-3)


def clustered(n_clusters=8, per=64, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 5 * torch.randn(n_clusters, d, generator=g)
    return centres.repeat_interleave(per, 0) + 0.1 * torch.randn(n_clusters * per, d, generator=g)


def test_kmeans_beats_random_init_on_clustered_data():
    x = clustered()
    centres = kmeans(x, 8, generator=torch.Generator().manual_seed(0))
    err_kmeans = torch.cdist(x, centres).min(1).values.pow(2).mean()
    random_init = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:8]]
    err_random = torch.cdist(x, random_init).min(1).values.pow(2).mean()
    assert err_kmeans < 0.05  # every cluster found (noise variance 0.01 per dim × 4)
    assert err_kmeans < err_random


@pytest.mark.parametrize("cls", VARIANTS)
def test_kmeans_init_happens_on_first_training_batch(cls):
    vq = make(cls, k=8, kmeans_init=True)
    x = clustered().T.reshape(1, 4, -1)  # (1, D, N)
    vq.eval()
    vq(x)
    assert not vq.initialized  # eval never initialises
    vq.train()
    out = vq(x)
    assert vq.initialized
    assert out.commitment_loss < 0.25 * 0.05


@pytest.mark.parametrize("cls", VARIANTS)
def test_dead_codes_revived_after_collapse(cls):
    vq = make(cls, k=32, d=4, dead_code_threshold=0.5, usage_decay=0.5).train()
    with torch.no_grad():
        vq._set_codes(torch.ones(32, dtype=torch.bool), torch.randn(32, 4) + 100.0)
    x = torch.randn(1, 4, 256) * 0.01  # every input near one point, far from all codes
    for _ in range(5):
        out = vq(x)
    assert torch.isfinite(vq.codebook).all()
    if cls is EMAVectorQuantizer:
        assert torch.isfinite(vq.cluster_size).all() and torch.isfinite(vq.embed_sum).all()
    # Dead codes were moved to encoder outputs, so the data now sits on the codebook.
    assert (vq.codebook.detach().norm(dim=1) < 1.0).sum() >= 30
    assert out.commitment_loss < 1.0


def test_config_builds_each_kind_and_rejects_bad_values():
    assert isinstance(build_quantizer(QuantizerConfig(kind="vq")), VectorQuantizer)
    assert isinstance(build_quantizer(QuantizerConfig(kind="ema")), EMAVectorQuantizer)
    with pytest.raises(ConfigError, match="codebook_size"):
        QuantizerConfig(codebook_size=1)
    with pytest.raises(ConfigError, match="beta"):
        QuantizerConfig(beta=-0.1)


def test_wrong_input_shape_rejected():
    vq = make(VectorQuantizer)
    with pytest.raises(ValueError, match="expected input"):
        vq(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="indices must lie"):
        vq.lookup(torch.tensor([[16]]))
