"""The C++ kernels (quantizers/native.py, kernels.cpp): the fused search gives the same indices
as the PyTorch search on every shape the tiling has an edge for, first-index ties across
register tiles and code blocks, at any thread count; the gather and the EMA update give what
their PyTorch fallbacks give, so a quantizer's forward is the same on either backend; and the
kernels fall back cleanly when they cannot be built."""

import logging

import numpy as np
import pytest
import torch

from vqvae.quantizers import EMAVectorQuantizer, QuantizerConfig, build_quantizer, native
from vqvae.quantizers.core import nearest_code

needs_kernel = pytest.mark.skipif(
    native.library() is None,
    reason="the fused native search cannot be built here (no C++ compiler or OpenMP)",
)


def torch_search(z, codebook):
    """(indices, min_e ||e||² - 2 z·e) by PyTorch: float64, no expansion trick."""
    d = torch.cdist(z.double(), codebook.double()).pow(2) - z.double().pow(2).sum(1, keepdim=True)
    best, indices = d.min(1)
    return indices, best


@needs_kernel
@pytest.mark.parametrize(
    "n, d, k",
    [
        (2048, 64, 512),  # the training shape: whole tiles
        (1001, 64, 500),  # rows not a multiple of the 6-row tile, codes of the 32-code tile
        (5, 7, 3),  # fewer rows than a tile, fewer codes than a tile
        (37, 1, 40),  # D = 1
        (300, 256, 1100),  # more codes than one 256 KiB block (D = 256: 256 codes a block)
        (0, 8, 16),  # no rows
    ],
)
def test_indices_equal_the_reference(n, d, k):
    g = torch.Generator().manual_seed(n + d + k)
    codebook = torch.randn(k, d, generator=g)
    # Vectors near codes (plus a little noise): an unambiguous nearest code for every row.
    z = codebook[torch.randint(0, k, (n,), generator=g)] + 0.05 * torch.randn(n, d, generator=g)
    indices, best = native.search(z, codebook)
    ref_indices, ref_best = torch_search(z, codebook)
    assert indices.dtype == torch.int64 and indices.shape == (n,)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(best.double(), ref_best, rtol=1e-4, atol=1e-3)


@needs_kernel
@pytest.mark.parametrize("block_bytes", [native.BLOCK_BYTES, 32 * 4 * 8])  # one block; 32 codes
def test_ties_go_to_the_first_code_across_tiles_and_blocks(monkeypatch, block_bytes):
    monkeypatch.setattr(native, "BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(200, 8, generator=g)
    codebook[150] = codebook[3]  # the same code in another tile and (small blocks) block
    codebook[20] = codebook[17]  # the same code twice in one tile
    z = torch.stack([codebook[3], codebook[150], codebook[17], codebook[20], torch.zeros(8)])
    z = z + 1e-4 * torch.randn(5, 8, generator=g)
    indices, _ = native.search(z, codebook)
    ref_indices, _ = torch_search(z, codebook)
    assert indices[:4].tolist() == [3, 3, 17, 17]
    assert indices[4] == ref_indices[4]


@needs_kernel
def test_every_thread_count_gives_the_same_answer():
    g = torch.Generator().manual_seed(1)
    z, codebook = torch.randn(997, 32, generator=g), torch.randn(700, 32, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.search(z, codebook)
        torch.set_num_threads(2)
        two = native.search(z, codebook)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@needs_kernel
def test_non_contiguous_input_is_searched_as_its_values():
    g = torch.Generator().manual_seed(2)
    z, codebook = torch.randn(64, 100, generator=g), torch.randn(50, 64, generator=g)
    indices, _ = native.search(z.t()[:100], codebook)  # (100, 64) transposed view
    assert torch.equal(indices, torch_search(z.t()[:100], codebook)[0])


def test_other_dtypes_are_left_to_pytorch():
    assert native.search(torch.randn(4, 3).double(), torch.randn(5, 3).double()) is None


def test_nearest_code_gives_the_same_answer_with_and_without_the_kernel(monkeypatch):
    g = torch.Generator().manual_seed(3)
    z, codebook = torch.randn(3000, 16, generator=g), torch.randn(512, 16, generator=g)
    first = nearest_code(z, codebook)
    monkeypatch.setattr(native, "library", lambda: None)
    second = nearest_code(z, codebook)
    assert torch.equal(first[0], second[0])
    torch.testing.assert_close(first[1], second[1], rtol=1e-4, atol=1e-4)


@needs_kernel
def test_gather_gives_codes_differences_counts_and_their_squared_sum():
    g = torch.Generator().manual_seed(4)
    z, codebook = torch.randn(999, 12, generator=g), torch.randn(40, 12, generator=g)
    indices = torch.randint(0, 30, (999,), generator=g)  # codes 30-39 unused
    codes, diff, counts, sq_sum = native.gather(z, codebook, indices)
    assert torch.equal(codes, codebook[indices])
    assert torch.equal(diff, z - codebook[indices])
    assert torch.equal(counts, torch.bincount(indices, minlength=40))
    expected = float((z - codebook[indices]).double().pow(2).sum())
    assert sq_sum.shape == () and float(sq_sum) == pytest.approx(expected, rel=1e-6)


def test_gather_without_the_kernel_returns_the_same(monkeypatch):
    # PyTorch's gather (a codebook with a gradient, or no kernel): the same four results.
    g = torch.Generator().manual_seed(4)
    z, codebook = torch.randn(999, 12, generator=g), torch.randn(40, 12, generator=g)
    indices = torch.randint(0, 30, (999,), generator=g)
    first = native.gather(z, codebook, indices)  # the kernel, where it can be built
    with_grad = native.gather(z, codebook.clone().requires_grad_(), indices)
    assert with_grad.codes.requires_grad  # the codebook's gradient flows through PyTorch's
    monkeypatch.setattr(native, "library", lambda: None)
    for codes, diff, counts, sq_sum in (with_grad, native.gather(z, codebook, indices)):
        assert torch.equal(codes, first.codes) and torch.equal(diff, first.residual)
        assert torch.equal(counts, first.counts)
        # float32 dot here, float64 sum in the kernel: equal up to float32 rounding
        assert float(sq_sum) == pytest.approx(float(first.sq_sum), rel=1e-5)


def test_ema_quantizer_trains_the_same_with_and_without_the_kernels(monkeypatch):
    """Values, losses, indices and gradients of training steps: the kernels' path (search,
    gather, EMA update) against PyTorch's."""
    runs = []
    for off in (False, True):
        with monkeypatch.context() as m:
            if off:
                m.setattr(native, "library", lambda: None)
            torch.manual_seed(0)
            q = EMAVectorQuantizer(64, 8, decay=0.9).train()
            z = torch.randn(4, 8, 6, 6, requires_grad=True)
            steps = []
            for _ in range(3):
                out = q(z)
                (out.quantized.square().sum() + out.loss).backward()
                steps.append((out.quantized.detach(), out.commitment_loss.detach(),
                              out.indices, out.code_counts, z.grad.clone()))  # fmt: skip
                z.grad = None
            runs.append((steps, q.codebook.clone()))
    (ours, book_ours), (torchs, book_torch) = runs
    for a, b in zip(ours, torchs, strict=True):
        assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])  # indices, counts
        for x, y in zip(a[:2] + a[4:], b[:2] + b[4:], strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(book_ours, book_torch, rtol=1e-5, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("k, d", [(512, 64), (37, 5)])
def test_ema_update_equals_the_pytorch_update(monkeypatch, k, d):
    g = torch.Generator().manual_seed(k)
    twins = [EMAVectorQuantizer(k, d, decay=0.9, kmeans_init=False).train() for _ in range(2)]
    twins[1].load_state_dict(twins[0].state_dict())
    before = twins[0].codebook.clone()
    for _ in range(3):
        flat = torch.randn(1000, d, generator=g)
        indices = torch.randint(0, k // 2, (1000,), generator=g)  # half the codes unused
        counts = torch.bincount(indices, minlength=k).float()
        twins[0]._update_codebook(flat, indices, counts)  # native
        with monkeypatch.context() as m:
            m.setattr(native, "library", lambda: None)
            twins[1]._update_codebook(flat, indices, counts)  # PyTorch
        for name in ("cluster_size", "embed_sum", "codebook"):
            ours, torchs = getattr(twins[0], name), getattr(twins[1], name)
            torch.testing.assert_close(ours, torchs, rtol=1e-5, atol=1e-5, msg=name)
    assert not torch.allclose(twins[0].codebook[: k // 2], before[: k // 2])  # moved


def test_ema_update_of_other_dtypes_is_the_papers_update():
    # float64 state has no kernel: PyTorch updates it, against the paper's appendix A.1 here
    # in NumPy (N <- γN + (1-γ)n, m <- γm + (1-γ)Σz, e = m / Laplace-smoothed N).
    k, d, decay, eps = 8, 3, 0.9, 1e-5
    rng = np.random.default_rng(5)
    flat, indices = rng.normal(size=(20, d)), rng.integers(0, k // 2, 20)
    size0, sum0 = rng.uniform(0.5, 2.0, k), rng.normal(size=(k, d))
    counts = np.bincount(indices, minlength=k).astype(np.float64)
    sums = np.zeros((k, d))
    np.add.at(sums, indices, flat)
    size = decay * size0 + (1 - decay) * counts
    embed = decay * sum0 + (1 - decay) * sums
    smoothed = (size + eps) / (size.sum() + k * eps) * size.sum()
    state = [torch.from_numpy(a.copy()) for a in (size0, sum0, np.zeros((k, d)))]
    native.ema_update(
        torch.from_numpy(flat), torch.from_numpy(indices), torch.from_numpy(counts),
        decay, eps, *state,
    )  # fmt: skip
    np.testing.assert_allclose(state[0].numpy(), size, rtol=1e-12)
    np.testing.assert_allclose(state[1].numpy(), embed, rtol=1e-12)
    np.testing.assert_allclose(state[2].numpy(), embed / smoothed[:, None], rtol=1e-12)


FORWARD_CASES = {
    "vq": {"kind": "vq"},
    "ema": {"kind": "ema"},
    "cosine": {"kind": "cosine"},
    "ema-rotation": {"kind": "ema", "gradient": "rotation"},
    "residual": {"kind": "residual"},
    "lowdim": {"kind": "ema", "lookup_dim": 4},
}


@needs_kernel
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_forward_is_the_same_on_either_backend(monkeypatch, case, training):
    """One forward and backward from the same state, with the kernels and with PyTorch alone:
    codes, indices, histograms and input gradients bit for bit; the commitment loss up to the
    rounding of Σ(z - codes)² (the kernel sums in float64, PyTorch in float32)."""
    runs = []
    for off in (False, True):
        with monkeypatch.context() as m:
            if off:
                m.setattr(native, "library", lambda: None)
            torch.manual_seed(0)
            config = QuantizerConfig(codebook_size=64, dim=8, **FORWARD_CASES[case])
            q = build_quantizer(config).train(training)
            z = torch.randn(4, 8, 6, 6, requires_grad=True)
            out = q(z)
            (out.quantized.square().sum() + out.loss).backward()
            runs.append((out, z.grad))
    (ours, grad_ours), (torchs, grad_torch) = runs
    assert torch.equal(ours.quantized, torchs.quantized)
    assert torch.equal(ours.indices, torchs.indices)
    assert torch.equal(ours.code_counts, torchs.code_counts)
    assert torch.equal(grad_ours, grad_torch)
    assert torch.equal(ours.codebook_loss, torchs.codebook_loss)
    torch.testing.assert_close(ours.commitment_loss, torchs.commitment_loss, rtol=1e-6, atol=0)


@needs_kernel
def test_build_is_cached_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("VQVAE_CACHE_DIR", str(tmp_path))
    built = native.library.__wrapped__()  # a fresh build into an empty cache
    assert built is not None
    (path,) = (tmp_path / "kernels").glob("kernels-*.so")
    stamp = path.stat().st_mtime_ns
    assert native.library.__wrapped__() is not None  # loaded from the cache, not rebuilt
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [path.name]  # no temporaries


def test_falls_back_when_turned_off_or_the_compiler_fails(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("VQVAE_NATIVE", "0")
    assert native.library.__wrapped__() is None
    monkeypatch.setenv("VQVAE_NATIVE", "1")
    monkeypatch.setenv("VQVAE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with caplog.at_level(logging.INFO, logger="vqvae.quantizers.native"):
        assert native.library.__wrapped__() is None
    assert "using the PyTorch search" in caplog.text
    assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.tmp"))
