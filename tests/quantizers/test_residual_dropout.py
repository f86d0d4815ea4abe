"""Residual VQ with quantizer dropout (SoundStream sec. 3.3) and decoding from fewer levels:
dropout only in training (eval uses every level, deterministically, without drawing), the depth
varies across training steps, the levels a step skips keep their gradients and codebook
statistics untouched, z_q and the commitment term are those of the levels used, a k-level
lookup equals an independent NumPy sum of the first k codebooks' rows, and a briefly trained
tiny audio model reconstructs better with every level added."""

import numpy as np
import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.models.audio import AudioVQVAE, AudioVQVAEConfig
from vqvae.quantizers import (
    EMAVectorQuantizer,
    QuantizerConfig,
    ResidualVectorQuantizer,
    VectorQuantizer,
    build_quantizer,
)

K, D, L = 16, 6, 3

pytestmark = pytest.mark.usefixtures("one_thread")


def rvq(level=EMAVectorQuantizer, dropout=1.0, levels=L):
    torch.manual_seed(0)
    return ResidualVectorQuantizer(
        [level(K, D, kmeans_init=False, dead_code_threshold=0.0) for _ in range(levels)],
        dropout=dropout,
    )


def test_eval_uses_every_level_deterministically_without_drawing():
    q = rvq().eval()
    z = torch.randn(4, D, 5)
    rng = torch.get_rng_state()
    a, b = q(z), q(z)
    assert torch.equal(torch.get_rng_state(), rng)  # no draw in eval mode
    assert a.indices.shape == (4, L, 5)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.quantized, b.quantized)
    assert torch.equal(a.quantized, q.lookup(a.indices))


def test_depth_varies_across_training_steps_only_with_dropout():
    z = torch.randn(8, D, 5)
    q = rvq(dropout=1.0).train()
    torch.manual_seed(1)
    depths = [q(z).indices.shape[1] for _ in range(40)]
    assert set(depths) == {1, 2, 3}
    half = rvq(dropout=0.5).train()
    torch.manual_seed(1)
    depths = [half(z).indices.shape[1] for _ in range(200)]
    assert 0.5 < depths.count(L) / 200 < 0.8  # p(L) = 0.5 + 0.5 / 3
    off = rvq(dropout=0.0).train()
    assert {off(z).indices.shape[1] for _ in range(10)} == {L}
    # the draw comes from the global generator: the same seed, the same depths
    torch.manual_seed(7)
    first = [q(z).indices.shape[1] for _ in range(10)]
    torch.manual_seed(7)
    assert [q(z).indices.shape[1] for _ in range(10)] == first


def _step_with_depth(q, z, depth):
    """A training step of ``q`` that used exactly ``depth`` levels (found by seeding)."""
    for seed in range(100):
        torch.manual_seed(seed)
        if q.levels_this_step() == depth:
            torch.manual_seed(seed)
            return q(z)
    raise AssertionError(f"no seed below 100 draws depth {depth}")


def test_skipped_levels_keep_their_ema_statistics():
    q = rvq(EMAVectorQuantizer).train()
    z = torch.randn(8, D, 5)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    out = _step_with_depth(q, z, 1)
    after = q.state_dict()
    for name in before:
        changed = not torch.equal(before[name], after[name])
        if name.startswith(("levels.1.", "levels.2.")):
            assert not changed, name
    assert not torch.equal(before["levels.0.codebook"], after["levels.0.codebook"])
    assert not torch.equal(before["levels.0.usage"], after["levels.0.usage"])
    assert int(q.levels[0].steps) == 1 and int(q.levels[1].steps) == 0
    assert out.code_counts.shape == (L, K)
    assert out.code_counts[0].sum() == 8 * 5 and not out.code_counts[1:].any()


def test_skipped_levels_get_no_gradient_and_z_q_is_the_sum_of_the_levels_used():
    q = rvq(VectorQuantizer).train()  # gradient codebooks: the codebook loss has gradients
    z = torch.randn(8, D, 5, requires_grad=True)
    out = _step_with_depth(q, z, 2)
    assert out.indices.shape == (8, 2, 5)
    # codebooks do not move inside forward (no EMA, no k-means, no reset): lookup is z_q
    assert torch.equal(out.quantized, q.lookup(out.indices))
    flat = z.detach().movedim(1, -1).reshape(-1, D)
    codes = q.lookup(out.indices).movedim(1, -1).reshape(-1, D)
    assert torch.allclose(out.commitment_loss, 0.25 * ((flat - codes) ** 2).mean())
    (out.loss + out.quantized.square().sum()).backward()
    assert q.levels[0].codebook.grad is not None and q.levels[1].codebook.grad is not None
    assert q.levels[2].codebook.grad is None
    assert z.grad is not None


def test_k_level_lookup_is_the_sum_of_the_first_k_codebooks_rows():
    q = rvq(dropout=0.0).eval()
    idx = torch.randint(0, K, (3, L, 4, 2))
    books = [level.codebook.numpy().astype(np.float64) for level in q.levels]
    for k in range(1, L + 1):
        ref = sum(books[l][idx[:, l].numpy()] for l in range(k))  # (3, 4, 2, D)
        got = q.lookup(idx[:, :k]).movedim(1, -1).double().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)  # float32 sums of k rows
    assert torch.equal(q.lookup(idx[:, :L]), q.lookup(idx))
    for bad in (idx[:, :0], torch.randint(0, K, (3, L + 1, 4, 2))):
        with pytest.raises(ValueError, match="first k <= 3 residual levels"):
            q.lookup(bad)


def test_the_config_option_is_checked_and_built():
    q = build_quantizer(QuantizerConfig(kind="residual", levels=3, quantizer_dropout=0.5))
    assert q.dropout == 0.5
    with pytest.raises(ConfigError, match=r"^model.quantizer.quantizer_dropout applies to kind"):
        QuantizerConfig(kind="ema", quantizer_dropout=0.5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"model.quantizer.quantizer_dropout must be in"):
            QuantizerConfig(kind="residual", quantizer_dropout=bad)


def test_a_briefly_trained_tiny_model_improves_with_every_level():
    torch.manual_seed(0)
    q = QuantizerConfig(kind="residual", levels=3, codebook_size=16, dim=8, quantizer_dropout=1.0)
    config = AudioVQVAEConfig(
        length=256, window=0, downsample=8, hidden=16, res_blocks=1, stft_weight=0,
        mel_weight=0, quantizer=q,
    )  # fmt: skip
    model = AudioVQVAE(config)
    t = torch.arange(256) / 8000
    f = 200 + 600 * torch.rand(32, 1)
    x = 0.5 * torch.sin(2 * torch.pi * f * t) * torch.rand(32, 1)  # (32, 256) tones
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        model.training_losses((x, None))["loss"].backward()
        opt.step()
    model.eval()
    codes = model.encode(x)  # (32, 3, 32)
    errors = [
        float((model.decode_indices(codes[:, :k])[:, 0] - x).square().mean()) for k in (1, 2, 3)
    ]
    assert errors[0] > errors[1] > errors[2], errors
    assert torch.equal(model.decode_indices(codes), model.reconstruct(x))


def test_the_image_model_decodes_from_fewer_levels_through_the_same_lookup():
    from vqvae.models import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    q = QuantizerConfig(kind="residual", levels=L, codebook_size=K, dim=4, kmeans_init=False)
    model = VQVAE(
        VQVAEConfig(in_channels=1, image_size=8, downsample=2, hidden=8, res_hidden=4,
                    res_blocks=1, quantizer=q)
    ).eval()  # fmt: skip
    codes = model.encode(torch.rand(2, 1, 8, 8))  # (2, 3, 4, 4)
    for k in range(1, L + 1):
        want = model.decode_quantized(model.quantizer.lookup(codes[:, :k]))
        assert torch.equal(model.decode_indices(codes[:, :k]), want)
    assert not torch.equal(model.decode_indices(codes[:, :1]), model.decode_indices(codes))
