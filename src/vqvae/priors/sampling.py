"""The one routine every prior uses to draw code indices from logits.

``sample_from_logits`` = temperature scaling -> top-k filter -> nucleus (top-p) filter ->
``torch.multinomial`` (or an inverse-CDF draw). Temperature 0 means greedy decoding (argmax).
Filters replace the logits of dropped codes by ``-inf`` so that ``softmax`` gives them
probability exactly 0.
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


def sample_from_logits(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    inverse_cdf: bool = False,
) -> Tensor:
    """Draw one code per row of ``logits`` (N, K) -> LongTensor (N,) on the logits' device.

    Leading dimensions other than N are also accepted: (..., K) -> (...). ``temperature`` 0 is
    argmax (top-k / top-p cannot change the argmax, so they are ignored then).
    ``inverse_cdf``: draw each row from one uniform number (the same distribution, another
    use of the generator): torch.multinomial, the default, draws an exponential per code (K a
    row), 15× slower for MaskGIT's dozens of rows a step; the default keeps the draws of
    earlier releases, so a seed gives an old run's samples again.
    """
    _check_options(temperature, top_k, top_p)
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (N, K) with K >= 1, got {tuple(logits.shape)}")
    lead = logits.shape[:-1]
    flat = logits.detach().reshape(-1, logits.shape[-1])  # (N, K)
    if temperature == 0:
        return flat.argmax(dim=-1).reshape(lead)
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32)) / temperature
    flat = filter_logits(flat, top_k=top_k, top_p=top_p)
    probs = flat.softmax(dim=-1)  # (N, K), 0 where filtered
    if inverse_cdf:
        # One uniform number per row, r <= 1 - 2^-24 (float32), so in float64 r·total < total
        # and the first code whose cumulative mass exceeds it has mass > 0: never a filtered
        # code.
        cdf = probs.double().cumsum(dim=-1)  # (N, K)
        r = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device).double()
        drawn = torch.searchsorted(cdf, r * cdf[:, -1:], right=True)  # (N, 1)
    else:
        drawn = torch.multinomial(probs, num_samples=1, generator=generator)  # (N, 1)
    return drawn.squeeze(-1).reshape(lead)


def log_probs_of(
    logits: Tensor,
    codes: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """The log-probability of ``codes`` (...) under the distribution ``sample_from_logits``
    draws from with the same options (after temperature and filters; ``-inf`` for a filtered
    code) -> (...) float. Temperature 0 (argmax) scores with the unscaled softmax, which ranks
    the drawn codes by the model's confidence in them (MaskGIT's use)."""
    _check_options(temperature, top_k, top_p)
    flat = logits.detach().reshape(-1, logits.shape[-1])  # (N, K)
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32))
    if temperature != 0:
        flat = filter_logits(flat / temperature, top_k=top_k, top_p=top_p)
    log_probs = flat.log_softmax(dim=-1)  # (N, K)
    return log_probs.gather(-1, codes.reshape(-1, 1).long()).reshape(codes.shape)
