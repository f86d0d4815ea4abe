"""How every prior draws code indices from logits.

``sample_from_logits`` = temperature scaling -> top-k filter -> nucleus (top-p) filter ->
``torch.multinomial`` (the autoregressive priors); ``sample_and_score`` draws from the same
distribution by inverse CDF and also returns each drawn code's log-probability (MaskGIT's
confidence). Temperature 0 means greedy decoding (argmax). Filters replace the logits of dropped
codes by ``-inf`` so that ``softmax`` gives them probability exactly 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        raise ValueError(f"temperature must be a number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0.0 < top_p <= 1.0
    ):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """A copy of ``logits`` (..., K) with ``-inf`` at every code removed by top-k / top-p.

    top-k keeps exactly the ``min(top_k, K)`` largest logits of each row (ties broken by
    ``torch.topk``). top-p then keeps the smallest set of most likely codes whose total
    probability reaches ``top_p``; the most likely code is always kept.
    """
    _check_options(1.0, top_k, top_p)
    out = logits.clone()
    k_size = out.shape[-1]
    if top_k is not None and top_k < k_size:
        keep = torch.zeros_like(out, dtype=torch.bool)
        keep.scatter_(-1, out.topk(top_k, dim=-1).indices, True)
        out = out.masked_fill(~keep, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)  # (..., K)
        probs = sorted_logits.softmax(dim=-1, dtype=torch.promote_types(out.dtype, torch.float32))
        # Mass strictly before each code in the sorted order: a code is dropped once the codes
        # above it already reach top_p. The first code has 0 mass before it, so it is always kept.
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, -math.inf)
    return out


def _tempered(flat: Tensor, temperature: float, top_k: int | None, top_p: float | None):
    """Float logits (N, K) at ``temperature`` (> 0), the codes top-k / top-p drop at -inf."""
    if temperature != 1:
        flat = flat / temperature
    if top_k is not None or top_p is not None:
        flat = filter_logits(flat, top_k=top_k, top_p=top_p)
    return flat


def sample_from_logits(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one code per row of ``logits`` (N, K) -> LongTensor (N,) on the logits' device.

    Leading dimensions other than N are also accepted: (..., K) -> (...). ``temperature`` 0 is
    argmax (top-k / top-p cannot change the argmax, so they are ignored then). Draws with
    ``torch.multinomial`` (an exponential per code), so a seed gives an old run's samples again.
    """
    _check_options(temperature, top_k, top_p)
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (N, K) with K >= 1, got {tuple(logits.shape)}")
    lead = logits.shape[:-1]
    flat = logits.detach().reshape(-1, logits.shape[-1])  # (N, K)
    if temperature == 0:
        return flat.argmax(dim=-1).reshape(lead)
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32))
    probs = _tempered(flat, temperature, top_k, top_p).softmax(dim=-1)  # 0 where filtered
    drawn = torch.multinomial(probs, num_samples=1, generator=generator)  # (N, 1)
    return drawn.squeeze(-1).reshape(lead)


def sample_and_score(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw one code per row of ``logits`` (N, K) and score it: (codes (N,), their
    log-probabilities (N,)) under the distribution drawn from (after temperature and filters).
    Temperature 0 draws the argmax and scores it with the unscaled softmax, which ranks the
    codes by the model's confidence in them (MaskGIT's use).

    The distribution is ``sample_from_logits``'s; the draw is another use of the generator:
    one uniform number a row through the inverse CDF instead of an exponential per code
    (``torch.multinomial``), which is 15× slower for MaskGIT's hundreds of rows a step.
    """
    _check_options(temperature, top_k, top_p)
    if logits.dim() != 2 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (N, K) with K >= 1, got {tuple(logits.shape)}")
    flat = logits.detach().to(torch.promote_types(logits.dtype, torch.float32))  # (N, K)
    if temperature == 0:
        drawn = flat.argmax(dim=-1)
    else:
        flat = _tempered(flat, temperature, top_k, top_p)
    log_probs = flat.log_softmax(dim=-1)  # (N, K), -inf where filtered
    if temperature != 0:
        # One uniform number per row, r <= 1 - 2^-24 (float32), so in float64 r·total < total
        # and the first code whose cumulative mass exceeds it has mass > 0: never a filtered
        # code.
        cdf = log_probs.double().exp_().cumsum_(dim=-1)  # (N, K)
        r = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device).double()
        drawn = torch.searchsorted(cdf, r * cdf[:, -1:], right=True).squeeze(-1)  # (N,)
    return drawn, log_probs.gather(-1, drawn[:, None]).squeeze(-1)
