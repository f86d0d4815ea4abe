"""LFQ, BSQ and SimVQ: the entropy terms against a brute-force computation over all 2^bits
codes, the factorised batch entropy against the marginals of that computation, the exact batch
entropy's hand-written backward against autograd, the index <-> code bijection, the
straight-through gradient, the penalty spreading a collapsed batch over the codes, SimVQ's
codebook as basis × map (trained through the map only), and the config rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.quantizers import BSQ, LFQ, QuantizerConfig, SimVQ, build_quantizer
from vqvae.quantizers import lfq as lfq_module


def corners(bits, scale):
    """(2^bits, bits) float64: the corner of every index (bit i of the index -> channel i)."""
    return np.array(
        [[scale if (c >> i) & 1 else -scale for i in range(bits)] for c in range(2**bits)]
    )


def brute_entropies(q, u):
    """Per-sample and batch entropy (nats) of p(c | u) ∝ exp(-||u - c||² / τ), enumerated over
    every corner c in float64; also the per-channel marginals P(channel i positive) (N, bits)."""
    u = u.detach().double().numpy()
    if isinstance(q, BSQ):
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
    c = corners(q.bits, q.scale)
    logits = -((u[:, None, :] - c[None]) ** 2).sum(-1) / q.temperature  # (N, K)
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    per_sample = -(p * np.log(np.maximum(p, 1e-300))).sum(1).mean()
    avg = p.mean(0)
    batch = -(avg * np.log(np.maximum(avg, 1e-300))).sum()
    marginals = p @ (c > 0)  # (N, bits)
    return per_sample, batch, marginals


def binary_entropy(p):
    p = np.clip(p, 1e-300, 1 - 1e-16)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


@pytest.mark.parametrize("cls", [LFQ, BSQ])
@pytest.mark.parametrize("temperature", [0.01, 0.5, 4.0])
def test_entropies_match_a_brute_force_over_all_codes(cls, temperature):
    torch.manual_seed(0)
    q = cls(5, 5, temperature=temperature)  # 32 codes: the exact batch entropy
    u = q._project(0.3 * torch.randn(200, 5))
    per_sample, batch = q.entropies(u)
    ref_sample, ref_batch, marginals = brute_entropies(q, u)
    np.testing.assert_allclose(float(per_sample), ref_sample, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(batch), ref_batch, rtol=1e-4, atol=1e-5)
    # Above exact_entropy_codes: the factorised form, the sum of the marginals' entropies,
    # an upper bound of the exact batch entropy.
    q.exact_entropy_codes = 1
    _, factorised = q.entropies(u)
    reference = binary_entropy(marginals.mean(0)).sum()
    np.testing.assert_allclose(float(factorised), reference, rtol=1e-4, atol=1e-5)
    assert float(factorised) >= ref_batch - 1e-5


def test_exact_batch_entropy_backward_matches_autograd(monkeypatch):
    monkeypatch.setattr(lfq_module, "_CHUNK_ELEMENTS", 3 * 16)  # 3 rows a chunk: 5 chunks
    torch.manual_seed(1)
    a = torch.randn(14, 4, dtype=torch.float64, requires_grad=True)
    table = lfq_module._bit_table(4, a.device).double()
    got = lfq_module._ExactBatchEntropy.apply(a, table)
    (grad,) = torch.autograd.grad(got, a)
    # the same entropy by plain autograd over the full (N, K) matrix
    log_p = a @ table.T - torch.nn.functional.softplus(a).sum(1, keepdim=True)
    avg = log_p.exp().mean(0)
    expected = -(avg * avg.log()).sum()
    (grad_ref,) = torch.autograd.grad(expected, a)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad, grad_ref)
    assert torch.autograd.gradcheck(lfq_module._ExactBatchEntropy.apply, (a, table))


@pytest.mark.parametrize("cls", [LFQ, BSQ])
def test_index_code_bijection_and_bits(cls):
    bits = 5
    q = cls(bits, bits).eval()  # D = bits: no projections, the output is the corner itself
    k = 2**bits
    points = q.lookup(torch.arange(k)[:, None])[..., 0]  # (K, bits)
    expected = torch.tensor(corners(bits, q.scale), dtype=torch.float32)
    assert torch.equal(points, expected)
    assert len(points.unique(dim=0)) == k
    back = q(points[..., None]).indices[:, 0]  # each corner quantizes to its own index
    assert torch.equal(back, torch.arange(k))
    if cls is BSQ:
        torch.testing.assert_close(points.norm(dim=1), torch.ones(k))  # unit vectors
    z = torch.randn(3, bits, 4, 4)
    out = q(z)
    place = 2 ** torch.arange(bits)
    assert torch.equal(out.indices, ((z > 0).long() * place[None, :, None, None]).sum(1))


@pytest.mark.parametrize("kind", ["lfq", "bsq"])
def test_lookup_gives_the_forward_output_bit_for_bit(kind):
    torch.manual_seed(0)
    q = build_quantizer(QuantizerConfig(kind=kind, codebook_size=2**10, dim=16)).eval()
    out = q(torch.randn(2, 16, 6, 5))
    assert out.indices.shape == (2, 6, 5) and out.indices.max() < 2**10
    assert torch.equal(q.lookup(out.indices), out.quantized)
    z = torch.randn(2, 16, 3, 3)
    assert torch.equal(q.export_indices(z), q(z).indices)
    assert torch.equal(q.export_lookup(out.indices), out.quantized)
    with pytest.raises(ValueError, match="indices must lie in"):
        q.lookup(torch.tensor([[2**10]]))


def test_gradient_passes_the_sign_straight_through():
    q = LFQ(4, 4, beta=0.0, entropy_weight=0.0).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(q(z).quantized.sum(), z)
    assert torch.equal(grad, torch.ones_like(z))
    # BSQ: straight through the sign, then through the normalisation
    q = BSQ(4, 4, beta=0.0, entropy_weight=0.0).train()
    (grad,) = torch.autograd.grad(q(z).quantized.sum(), z)
    flat = z.detach().movedim(1, -1).reshape(-1, 4).requires_grad_()
    (ref,) = torch.autograd.grad(torch.nn.functional.normalize(flat, dim=1).sum(), flat)
    torch.testing.assert_close(grad.movedim(1, -1).reshape(-1, 4), ref)


def test_losses_commitment_and_penalty_values():
    torch.manual_seed(0)
    q = LFQ(3, 3, beta=0.5, entropy_weight=0.2, batch_entropy_weight=0.7, temperature=1.0)
    z = torch.randn(4, 3, 5)
    out = q.train()(z)
    u = z.movedim(1, -1).reshape(-1, 3)
    commitment = 0.5 * (u - torch.where(u > 0, 1.0, -1.0)).pow(2).mean()
    torch.testing.assert_close(out.commitment_loss, commitment)
    per_sample, batch, _ = brute_entropies(q, u)
    penalty = 0.2 * (per_sample + 0.7 * (math.log(8) - batch))
    np.testing.assert_allclose(float(out.codebook_loss), penalty, rtol=1e-4)
    assert float(out.codebook_loss) >= 0
    assert float(q.eval()(z).codebook_loss) == 0  # the penalty is a training term
    assert out.code_counts.sum() == 20 and out.code_counts.shape == (8,)


@pytest.mark.parametrize("cls", [LFQ, BSQ])
@pytest.mark.parametrize("exact", [True, False])
def test_the_penalty_spreads_a_collapsed_batch_over_the_codes(cls, exact):
    torch.manual_seed(0)
    bits = 6
    q = cls(bits, bits, beta=0.0, entropy_weight=1.0, temperature=0.5)
    q.exact_entropy_codes = 2**bits if exact else 1
    u = (0.5 + 0.05 * torch.randn(256, bits)).requires_grad_()  # every vector in one corner
    opt = torch.optim.Adam([u], lr=0.05)
    used_before = len(q(u[..., None]).indices.unique())
    for _ in range(150):
        opt.zero_grad()
        q.train()(u[..., None]).codebook_loss.backward()
        opt.step()
    used = len(q.eval()(u.detach()[..., None]).indices.unique())
    assert used_before <= 2 and used >= 0.6 * 2**bits, used


def test_memory_of_the_exact_entropy_stays_in_chunks(monkeypatch):
    seen = []
    real = torch.Tensor.exp_

    def spy(t):
        seen.append(t.numel())
        return real(t)

    monkeypatch.setattr(torch.Tensor, "exp_", spy)
    q = LFQ(10, 10).train()  # 1024 codes, exact
    u = torch.randn(20_000, 10, requires_grad=True)
    q.entropy_penalty(u).backward()
    assert seen and max(seen) <= lfq_module._CHUNK_ELEMENTS  # never the whole (N, K)


def test_large_codebooks_are_factorised_and_cheap():
    q = build_quantizer(QuantizerConfig(kind="lfq", codebook_size=2**18, dim=32)).train()
    z = torch.randn(8, 32, 8, 8, requires_grad=True)
    out = q(z)
    (out.quantized.square().mean() + out.loss).backward()
    assert out.code_counts.shape == (2**18,) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("kind", ["lfq", "bsq"])
def test_saturated_channels_keep_the_factorised_entropy_finite(kind):
    """At the default temperature a real batch can push a channel's probability to exactly 0 or
    1 for every vector (a VQ-VAE's first step on CIFAR-10 did): the factorised batch entropy
    must keep its value and give finite gradients, not NaN."""
    q = build_quantizer(QuantizerConfig(kind=kind, codebook_size=2**12, dim=16)).train()
    torch.manual_seed(0)
    # Every vector near one far-out point: channels saturate the same way across the batch.
    z = (100 * torch.randn(1, 16, 1, 1) + 0.01 * torch.randn(4, 16, 4, 4)).requires_grad_(True)
    u = q._project(z.detach().movedim(1, -1).reshape(-1, 16))
    a = q.bit_logits(u)
    assert ((torch.sigmoid(a) == 1).all(0) | (torch.sigmoid(a) == 0).all(0)).any()
    out = q(z)
    (out.quantized.square().mean() + out.loss).backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in q.parameters() if p.grad is not None)
    _, batch = q.entropies(u)
    reference = binary_entropy(torch.sigmoid(a).detach().double().mean(0).numpy()).sum()
    np.testing.assert_allclose(float(batch.detach()), reference, rtol=1e-4, atol=1e-5)


# --- SimVQ ---------------------------------------------------------------------------------------
def test_simvq_codebook_is_the_frozen_basis_times_the_learned_map():
    torch.manual_seed(0)
    q = SimVQ(32, 6, kmeans_init=False, dead_code_threshold=0.0).train()
    with torch.no_grad():
        q.linear.weight.add_(0.1 * torch.randn(6, 6))
    expected = q.basis.double() @ q.linear.weight.detach().double().T
    torch.testing.assert_close(q.codebook_vectors().double(), expected, rtol=1e-6, atol=1e-7)
    assert [n for n, _ in q.named_parameters()] == ["linear.weight"]  # the basis is frozen
    basis = q.basis.clone()
    opt = torch.optim.SGD(q.parameters(), lr=0.5)
    z = torch.randn(4, 6, 5, 5)
    before = q.codebook_vectors().detach().clone()
    for _ in range(3):
        opt.zero_grad()
        out = q(z)
        out.loss.backward()
        opt.step()
    assert torch.equal(q.basis, basis)  # only the map learned
    moved = (q.codebook_vectors().detach() - before).norm(dim=1)
    used = out.code_counts > 0
    assert (moved[~used] > 0).all()  # unused codes move too: the map moves the whole codebook


def test_simvq_set_codes_solves_for_the_basis_and_survives_save_load():
    torch.manual_seed(0)
    q = SimVQ(16, 4, kmeans_init=True).train()
    with torch.no_grad():
        q.linear.weight.copy_(torch.randn(4, 4) + 2 * torch.eye(4))
    target = torch.randn(16, 4)
    q._set_codes(torch.ones(16, dtype=torch.bool), target)
    torch.testing.assert_close(q.codebook_vectors().detach(), target, rtol=1e-4, atol=1e-5)
    q(torch.randn(2, 4, 8, 8))  # k-means init on the first batch
    fresh = SimVQ(16, 4)
    fresh.load_state_dict(q.state_dict())
    z = torch.randn(2, 4, 3, 3)
    a, b = q.eval()(z), fresh.eval()(z)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.quantized, b.quantized)
    assert torch.equal(fresh.lookup(a.indices), a.quantized)


# --- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, cls",
    [({"kind": "lfq"}, LFQ), ({"kind": "bsq"}, BSQ), ({"kind": "simvq"}, SimVQ)],
)
def test_config_builds_the_new_kinds(options, cls):
    cfg = QuantizerConfig(codebook_size=1024, dim=16, entropy_weight=0.3, **options)
    q = build_quantizer(cfg)
    assert type(q) is cls and q.codebook_size == 1024 and q.dim == 16
    if cls is not SimVQ:
        assert q.bits == 10 and q.entropy_weight == 0.3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"kind": "lfq", "codebook_size": 1000}, "model.quantizer.codebook_size must be a power"),
        ({"kind": "bsq", "codebook_size": 2**25}, "model.quantizer.codebook_size must be a power"),
        ({"kind": "lfq", "lookup_dim": 4}, "model.quantizer.lookup_dim does not apply"),
        ({"kind": "bsq", "gradient": "rotation"}, "model.quantizer.gradient must be 'ste'"),
        ({"entropy_weight": -1.0}, "model.quantizer.entropy_weight must be >= 0"),
        ({"entropy_batch_weight": -1.0}, "model.quantizer.entropy_batch_weight must be >= 0"),
        ({"entropy_temperature": 0.0}, "model.quantizer.entropy_temperature must be > 0"),
    ],
)
def test_bad_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as err:
        QuantizerConfig(**options)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["lfq", "bsq", "simvq"])
def test_a_vqvae_trains_and_decodes_with_each_new_kind(kind):
    from vqvae.models.vqvae import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    quantizer = QuantizerConfig(kind=kind, codebook_size=64, dim=6)
    config = VQVAEConfig(in_channels=3, image_size=8, hidden=8, res_hidden=4, quantizer=quantizer)
    model = VQVAE(config)
    x = torch.rand(2, 3, 8, 8)
    losses = model.training_losses((x, None))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert all(p.grad is not None for p in model.encoder.parameters())
    model.eval()
    codes = model.encode(x)
    assert torch.equal(model.decode_indices(codes), model(x).reconstruction)
