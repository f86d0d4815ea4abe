"""k-means (k-means++ seeding + Lloyd iterations) for data-dependent codebook initialisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vqvae.quantizers.core import nearest_code

# Seeding draws the centres in at most this many rounds (exact k-means++ for k <= SEED_ROUNDS).
SEED_ROUNDS = 256


@torch.no_grad()
def kmeans(
    x: Tensor, k: int, *, iters: int = 10, generator: torch.Generator | None = None
) -> Tensor:
    """Cluster rows of ``x`` (N, D) into ``k`` centroids (k, D).

    Seeding is k-means++ (Arthur & Vassilvitskii 2007): each new centre is drawn with probability
    proportional to its squared distance to the nearest centre so far. For large k the centres
    are drawn in at most ``SEED_ROUNDS`` rounds of ceil(k / SEED_ROUNDS) (without replacement,
    from the same distribution), so seeding costs about one search instead of k passes over the
    data: k = 16384 on 65,536 rows would otherwise read the rows 16,384 times. With fewer rows
    than centres, rows are reused with a little noise so that every centre is distinct.
    """
    x = x.detach().float()
    n = x.shape[0]
    if n < k:  # not enough data: repeat rows, jittered so no two centres coincide
        reps = x[torch.randint(n, (k - n,), generator=generator, device=x.device)]
        noise = torch.randn(reps.shape, generator=generator, device=x.device)
        # correction=0: a single row has std 0 (the unbiased estimate would be NaN).
        x = torch.cat([x, reps + 1e-3 * x.std(correction=0).clamp_min(1e-6) * noise])
        n = k
    centres = torch.empty(k, x.shape[1], device=x.device)
    centres[0] = x[torch.randint(n, (1,), generator=generator, device=x.device)]
    closest = (x - centres[0]).pow(2).sum(1)  # (N,) squared distance to the nearest centre
    per_round = math.ceil((k - 1) / SEED_ROUNDS) if k > 1 else 1
    for start in range(1, k, per_round):
        m = min(per_round, k - start)
        weights = closest.clamp_min(0) + 1e-12
        choice = torch.multinomial(weights, m, generator=generator)  # distinct rows
        centres[start : start + m] = x[choice]
        _, new = nearest_code(x, centres[start : start + m])
        closest = torch.minimum(closest, new)
    for _ in range(iters):  # Lloyd steps; an empty cluster keeps its centre
        assign, _ = nearest_code(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres
