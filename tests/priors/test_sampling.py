"""filter_logits / sample_from_logits: the one draw routine shared by every prior."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqvae.priors import sample_from_logits
from vqvae.priors.sampling import filter_logits

DRAWS = 4000


def test_top_k_keeps_exactly_the_k_largest() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 3.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    out = filter_logits(logits, top_k=2)
    assert torch.isfinite(out).tolist() == [
        [False, True, False, True, False],
        [True, True, False, False, False],
    ]
    kept = torch.isfinite(out)
    assert torch.equal(out[kept], logits[kept])  # kept logits are untouched


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()[None]
    # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: keep {1, 3}
    assert torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist() == [
        False,
        True,
        False,
        True,
    ]
    # 0.81 is not reached by {1, 3}: add code 2
    assert torch.isfinite(filter_logits(logits, top_p=0.81))[0].tolist() == [
        False,
        True,
        True,
        True,
    ]
    # a tiny p always keeps the most likely code
    assert torch.isfinite(filter_logits(logits, top_p=1e-9))[0].tolist() == [
        False,
        True,
        False,
        False,
    ]
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-20, 20, allow_nan=False), min_size=1, max_size=12),
    st.integers(1, 14),
    st.floats(0.01, 1.0),
)
def test_filters_keep_a_top_prefix(values: list[float], k: int, p: float) -> None:
    logits = torch.tensor(values, dtype=torch.float64)[None]
    out = filter_logits(logits, top_k=k, top_p=p)
    kept = torch.isfinite(out)[0]
    assert 1 <= int(kept.sum()) <= min(k, len(values))
    assert logits[0][kept].max() == logits[0].max()  # the most likely code survives
    # anything kept is at least as likely as anything dropped
    if (~kept).any():
        assert logits[0][kept].min() >= logits[0][~kept].max()


def test_top_k_never_emits_a_code_outside_the_top_k() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 20).expand(DRAWS, 20)
    top3 = set(logits[0].topk(3).indices.tolist())
    g = torch.Generator().manual_seed(1)
    drawn = sample_from_logits(logits, top_k=3, temperature=2.0, generator=g)
    assert set(drawn.tolist()) == top3  # all of them and nothing else


def test_top_p_never_emits_a_filtered_code() -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()[None].expand(DRAWS, 4)
    g = torch.Generator().manual_seed(2)
    drawn = sample_from_logits(logits, top_p=0.7, generator=g)
    assert set(drawn.tolist()) == {1, 3}
    # renormalised over the nucleus: P(1) = 0.5 / 0.8
    assert abs((drawn == 1).double().mean().item() - 0.625) < 0.04


def test_unfiltered_draws_follow_the_softmax() -> None:
    probs = torch.tensor([0.1, 0.2, 0.7])
    g = torch.Generator().manual_seed(3)
    drawn = sample_from_logits(probs.log()[None].expand(DRAWS, 3), generator=g)
    freq = torch.bincount(drawn, minlength=3).double() / DRAWS
    assert torch.allclose(freq, probs.double(), atol=0.03)


def test_temperature_zero_is_argmax() -> None:
    torch.manual_seed(0)
    logits = torch.randn(50, 9)
    drawn = sample_from_logits(logits, temperature=0.0, top_k=4, top_p=0.3)
    assert torch.equal(drawn, logits.argmax(-1))


def test_low_temperature_concentrates_on_the_argmax() -> None:
    logits = torch.tensor([[1.0, 1.5, 0.0]]).expand(500, 3)
    g = torch.Generator().manual_seed(4)
    assert (sample_from_logits(logits, temperature=0.01, generator=g) == 1).all()


def test_same_seed_same_samples() -> None:
    torch.manual_seed(0)
    logits = torch.randn(300, 16)
    a = sample_from_logits(logits, top_k=8, top_p=0.9, generator=torch.Generator().manual_seed(7))
    b = sample_from_logits(logits, top_k=8, top_p=0.9, generator=torch.Generator().manual_seed(7))
    c = sample_from_logits(logits, top_k=8, top_p=0.9, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_shapes_and_dtype() -> None:
    out = sample_from_logits(torch.zeros(5, 3))
    assert out.shape == (5,) and out.dtype == torch.long
    assert sample_from_logits(torch.zeros(2, 4, 3)).shape == (2, 4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -1.0},
        {"temperature": math.inf},
        {"top_k": 0},
        {"top_k": 2.5},
        {"top_p": 0.0},
        {"top_p": 1.5},
    ],
)
def test_invalid_options_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        sample_from_logits(torch.zeros(2, 3), **kwargs)
