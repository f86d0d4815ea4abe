"""Masked, parallel-decoding prior over code maps and code sequences (MaskGIT).

Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer". A bidirectional Transformer
(the Transformer prior's pre-LN ``Block`` with non-causal attention) reads a code map in which
some positions are replaced by a mask token and predicts the code at every masked position
from all the unmasked ones; the input is

    [class token] + [token(z_i) or token(MASK)] + row(i // W) + col(i % W)    (layout "2d")
                                                  + pos(i)                     (layout "1d")

Training (paper §3.1): per map, a mask ratio γ(r) = cos(π r / 2) with r ~ U(0, 1); ⌈γ·N⌉ of
the N positions, drawn uniformly, are masked; the loss is the cross-entropy on the masked
positions only. Class conditioning by the leading class token, with label dropout (the null
class) for classifier-free guidance, as the autoregressive priors.

Decoding (paper §3.2) in T steps (``decode_steps``, default 8): with U unknown positions at the
start, after step t (1-based) ``⌊U·γ(t/T)⌋`` stay masked (at least one fewer each step, none
after step T: ``masked_schedule``). At each step every masked position is drawn (temperature,
top-k, top-p, guidance — as the other priors), scored by its log-probability plus Gumbel noise
of scale ``confidence_noise · (1 − t/T)`` (the published annealed "choice temperature"), and
the most confident ones are kept: a kept position never changes again. Positions given by the
caller (a prefix for ``--complete``, any mask for ``inpaint``) are kept from the start.

There is no exact likelihood (``exact_likelihood = False``): the logits predict masked codes
from the visible ones, not the factors of one chain rule, so the held-out NLL and the codec
use the autoregressive priors; ``masked_bits`` gives the masked-token cross-entropy at a stated
mask ratio instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae import configs
from vqvae.errors import ConfigError
from vqvae.nets.modes import eval_mode
from vqvae.priors.base import Prior, fill_unset, is_int
from vqvae.priors.sampling import sample_and_score
from vqvae.priors.transformer import (
    FIXED_SIZES,
    Block,
    TransformerPrior,
    check_layout_grid,
    check_transformer_fields,
    fitted_sizes,
    position_embeddings,
)
from vqvae.serialization import Pretrained

# The mask ratios ``evaluate`` reports the masked-token cross-entropy at (1.0: every code
# predicted from the class alone).
EVAL_MASK_RATIOS = (0.25, 0.5, 0.75, 1.0)
# Fully masked maps' logits kept (one per grid and class; ``_blank_logits``) before starting over.
BLANK_CACHE_SIZE = 64


@dataclass
class MaskGITPriorConfig:
    kind: Literal["maskgit"] = "maskgit"  # the prior (see vqvae.priors.PRIORS)
    codebook_size: int = 512  # K: number of code indices (the mask token is one more)
    # The network's size. None: sized from the code grid, K and the number of training maps
    # as the Transformer prior's (``transformer.fitted_sizes``); a prior built directly from a
    # config that leaves them None gets the Transformer's FIXED_SIZES.
    dim: int | None = None
    heads: int | None = None
    layers: int | None = None
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio · dim
    dropout: float = 0.0
    num_classes: int = 0  # 0 = unconditional
    label_dropout: float = 0.0  # > 0 adds a null class: classifier-free guidance
    layout: Literal["2d", "1d"] = "2d"  # code maps (B, H, W) or sequences (B, T)
    max_rows: int = 32  # layout "2d": largest grid
    max_cols: int = 32
    max_length: int = 1024  # layout "1d": longest sequence
    decode_steps: int = 8  # T: network passes to draw a whole map (``sample(steps=...)``)
    # Scale of the Gumbel noise on the confidences at the first step, annealed linearly to 0
    # at the last (the published "choice temperature", 4.5): more noise, more diverse maps.
    confidence_noise: float = 4.5

    def __post_init__(self) -> None:
        check_transformer_fields(self)
        check_steps(self.decode_steps, "prior.decode_steps")
        check_noise(self.confidence_noise, "prior.confidence_noise")


def check_steps(steps: object, where: str) -> int:
    if not is_int(steps) or steps < 1:
        raise ConfigError(f"{where} must be an integer >= 1, got {steps!r}")
    return steps


def check_noise(scale: object, where: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 <= scale < math.inf:
        raise ConfigError(f"{where} must be a finite number >= 0, got {scale!r}")
    return float(scale)


def mask_ratio(r: Tensor) -> Tensor:
    """The cosine schedule γ(r) = cos(π r / 2): the fraction of codes masked at progress r."""
    return torch.cos(math.pi / 2 * r)


def masked_schedule(unknown: Tensor, steps: int) -> Tensor:
    """How many positions stay masked after each decoding step: (steps, B) int64 for ``unknown``
    (B,) positions masked at the start. ``⌊U·γ(t/T)⌋`` after step t, but at least one fewer
    than before while any is left, and 0 after the last: every step reveals >= 1 position
    until the map is complete (a map with U < T unknowns completes in U steps)."""
    unknown = unknown.long()
    progress = torch.arange(1, steps + 1, dtype=torch.float64) / steps  # (T,)
    target = torch.floor(unknown.double()[None] * mask_ratio(progress)[:, None]).long()  # (T, B)
    target[-1] = 0
    out = torch.empty_like(target)
    before = unknown
    for t in range(steps):
        before = torch.minimum(target[t], (before - 1).clamp(min=0))
        out[t] = before
    return out


class MaskGITPrior(Pretrained, Prior):
    """p(z_masked | z_visible [, class]): a bidirectional Transformer decoded in T steps."""

    config_class = MaskGITPriorConfig
    exact_likelihood = False
    parallel_steps = True

    @classmethod
    def fitted_config(
        cls, config, *, grid, codebook_size, num_classes, cond_codebook_size=0, train_items=None
    ):
        """Sizes as the Transformer prior's (left None: from the grid, K and the number of
        training maps); 1D sequences set the "1d" layout and ``max_length`` = their length."""
        if cond_codebook_size:
            raise ConfigError("prior.kind = 'maskgit' cannot be conditioned on a code map")
        fitted = fitted_sizes(tuple(grid), codebook_size, config.dim, config.heads, train_items)
        config = fill_unset(config, "prior", **fitted)
        sizes = {"codebook_size": codebook_size, "num_classes": num_classes}
        if len(grid) == 1:
            sizes.update(layout="1d", max_length=grid[0])
        elif len(grid) != 2:
            raise ConfigError(f"prior.kind = 'maskgit' models code maps or sequences, not {grid}")
        return configs.replace(config, "prior", **sizes)

    def __init__(self, config: MaskGITPriorConfig) -> None:
        super().__init__()
        if not isinstance(config, MaskGITPriorConfig):
            raise TypeError(f"config must be a MaskGITPriorConfig, got {type(config).__name__}")
        config = fill_unset(config, "prior", **FIXED_SIZES)
        self.config = config
        d = config.dim
        self.mask_token = config.codebook_size  # the last row of the token table
        self.token = nn.Embedding(config.codebook_size + 1, d)
        self.class_token = nn.Embedding(max(1, self.label_rows), d)  # one per class (+ null)
        if config.layout == "2d":
            self.row = nn.Embedding(config.max_rows, d)
            self.col = nn.Embedding(config.max_cols, d)
        else:
            self.pos = nn.Embedding(config.max_length, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(d, config.heads, config.mlp_ratio, config.dropout, causal=False)
            for _ in range(config.layers)
        )
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.codebook_size)
        # ``_blank_logits``: blank maps' logits per (grid, class), for these weights' versions
        self._blank_weights: tuple | None = None
        self._blank_cache: dict[tuple, Tensor] = {}
        self.apply(TransformerPrior._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.layers))

    def _check_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        return check_layout_grid(self.config, grid, "maskgit")

    # ----------------------------------------------------------------- forward
    def _logits(
        self, tokens: Tensor, labels: Tensor | None, pos: Tensor, where: Tensor | None = None
    ) -> Tensor:
        """tokens (B, N) in [0, K] (K = the mask token), labels (B,) or None, pos (N, D)
        -> logits (B, N, K); with ``where`` (B, N) bool, only those positions' -> (M, K)."""
        b = tokens.shape[0]
        first = labels if labels is not None else torch.zeros(b, dtype=torch.long)
        lead = self.class_token(first.to(tokens.device))[:, None]  # (B, 1, D)
        x = torch.cat([lead, self.token(tokens) + pos], dim=1)  # (B, 1 + N, D)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x[:, 1:])  # (B, N, D)
        return self.head(x if where is None else x[where])  # (B, N, K) or (M, K)

    def forward(
        self,
        indices: Tensor,
        labels: Tensor | None = None,
        cond: Tensor | None = None,
        *,
        mask: Tensor,
    ) -> Tensor:
        """indices (B, *grid) in [0, K), mask (B, *grid) bool (True: hidden behind the mask
        token) -> logits (B, K, *grid). The logits at a masked position predict its code from
        the visible ones; at a visible position they see the code itself (no use)."""
        grid = self._check_indices(indices)
        b = indices.shape[0]
        labels = self._check_labels(labels, b)
        self._check_cond(cond, b, grid)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != indices.shape:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(indices.shape)}")
        n = math.prod(grid)
        tokens = indices.reshape(b, n).long().masked_fill(mask.reshape(b, n), self.mask_token)
        logits = self._logits(tokens, labels, position_embeddings(self, grid))  # (B, N, K)
        return logits.transpose(1, 2).reshape(b, -1, *grid)

    # ---------------------------------------------------------------- training
    def random_mask(self, shape: tuple[int, ...], ratio: Tensor, generator=None) -> Tensor:
        """(B, *grid) bool with ``max(1, ⌈ratio_b · N⌉)`` positions of map b masked, drawn
        uniformly without replacement (ratio: (B,))."""
        b, n = shape[0], math.prod(shape[1:])
        count = torch.ceil(ratio.double() * n).long().clamp(1, n).to(self.device)  # (B,)
        scores = torch.rand(b, n, generator=generator, device=self.device)
        rank = scores.argsort(dim=1).argsort(dim=1)  # (B, N): a random permutation per map
        return (rank < count[:, None]).reshape(shape)

    def training_losses(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Cross-entropy (nats) on the masked codes of ``batch = (indices, labels or None)``,
        with per-map mask ratios γ(r), r ~ U(0, 1) (torch's global generator)."""
        indices, labels, *rest = batch
        cond = rest[0] if rest else None
        b = indices.shape[0]
        ratio = mask_ratio(torch.rand(b, device=indices.device))
        mask = self.random_mask(tuple(indices.shape), ratio)
        logits = self(indices, self._dropped_labels(labels), cond, mask=mask)  # (B, K, *grid)
        per_code = F.cross_entropy(logits, indices.long(), reduction="none")  # (B, *grid)
        loss = per_code[mask].mean()  # the masked codes only
        return {"loss": loss, "masked_bits_per_code": loss.detach() / math.log(2)}

    @torch.no_grad()
    def masked_bits(
        self,
        indices: Tensor,
        labels: Tensor | None,
        ratio: float,
        generator: torch.Generator | None = None,
    ) -> tuple[float, int]:
        """(total bits, number of masked codes): the cross-entropy of the codes at
        ``max(1, ⌈ratio·N⌉)`` uniformly drawn masked positions of each map, given the rest."""
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        with eval_mode(self):
            full = torch.full((indices.shape[0],), float(ratio))
            mask = self.random_mask(tuple(indices.shape), full, generator)
            logits = self(indices, labels, mask=mask)  # (B, K, *grid)
        per_code = F.cross_entropy(logits, indices.long().to(logits.device), reduction="none")
        return float(per_code[mask].sum()) / math.log(2), int(mask.sum())

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        grid: tuple[int, ...],
        labels: Tensor | int | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float | None = None,
        prefix: Tensor | None = None,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        cached: bool = True,
        steps: int | None = None,
        confidence_noise: float | None = None,
    ) -> Tensor:
        """``Prior.sample`` by iterative parallel decoding (module docstring): ``steps``
        network passes (default ``prior.decode_steps``) whatever the grid, confidences with
        Gumbel noise of scale ``confidence_noise`` (default ``prior.confidence_noise``) at
        the first step; ``prefix`` codes are kept and the rest drawn. ``cached`` has no
        effect: every step is one pass over the whole map (the visible codes change between
        steps, so nothing can be cached)."""
        draw = self._prepare_draw(
            n,
            grid,
            labels,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            guidance_scale=guidance_scale,
            prefix=prefix,
            cond=cond,
        )
        known = torch.arange(draw.codes.shape[1], device=self.device) < draw.start  # (N,)
        known = known.expand_as(draw.codes).clone()  # (n, N)
        codes = self._decode(
            draw.codes,
            known,
            draw,
            guidance_scale,
            dict(temperature=temperature, top_k=top_k, top_p=top_p),
            generator,
            steps=steps,
            confidence_noise=confidence_noise,
        )
        return codes.reshape(n, *draw.grid)

    @torch.no_grad()
    def inpaint(
        self,
        codes: Tensor,
        keep: Tensor,
        labels: Tensor | int | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        confidence_noise: float | None = None,
    ) -> Tensor:
        """Redraw the positions of ``codes`` (n, *grid) where ``keep`` (n, *grid, bool) is
        False, keeping the others exactly; the options as ``sample``'s -> (n, *grid) int64."""
        grid = self._check_indices(codes)
        n = codes.shape[0]
        if not isinstance(keep, Tensor) or keep.dtype != torch.bool or keep.shape != codes.shape:
            raise ValueError(f"keep must be a bool tensor of shape {tuple(codes.shape)}")
        draw = self._prepare_draw(
            n,
            grid,
            labels,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            guidance_scale=guidance_scale,
            prefix=None,
            cond=None,
        )
        flat = codes.reshape(n, -1).long().to(self.device)
        known = keep.reshape(n, -1).to(self.device)
        out = self._decode(
            flat.masked_fill(~known, 0),
            known,
            draw,
            guidance_scale,
            dict(temperature=temperature, top_k=top_k, top_p=top_p),
            generator,
            steps=steps,
            confidence_noise=confidence_noise,
        )
        return out.reshape(n, *grid)

    def _blank_logits(
        self, labels: Tensor | None, rows: int, grid: tuple[int, ...], pos: Tensor
    ) -> Tensor:
        """The logits (rows·N, K) of ``rows`` fully masked maps of ``grid``, map by map: the
        network sees only mask tokens and the class, so they depend on the class alone. Each
        class's are computed once, one map at a time (the same numbers whatever the batch or
        call history), and kept while the weights stay the same: the first decoding step of a
        map drawn from scratch costs no network pass after the first map of its class."""
        weights = tuple((p.data_ptr(), p._version, p.dtype) for p in self.parameters())
        if self._blank_weights != weights:  # trained, loaded or moved since
            self._blank_weights, self._blank_cache = weights, {}
        classes = labels.tolist() if labels is not None else [0] * rows
        blank = torch.full((1, math.prod(grid)), self.mask_token, device=self.device)
        out = []
        for label in classes:
            key = (tuple(grid), label)
            if key not in self._blank_cache:
                if len(self._blank_cache) >= BLANK_CACHE_SIZE:
                    self._blank_cache.clear()
                label_row = torch.tensor([label], device=self.device)
                self._blank_cache[key] = self._logits(blank, label_row, pos)[0]  # (N, K)
            out.append(self._blank_cache[key])
        return torch.cat(out)  # (rows·N, K)

    def _decode(
        self, codes, known, draw, guidance_scale, options, generator, *, steps, confidence_noise
    ) -> Tensor:
        """codes (n, N), known (n, N) bool (kept as they are) -> (n, N) every position drawn,
        in ``steps`` steps with confidence noise ``confidence_noise`` (None: the config's).

        Step t: draw every masked position, score it (log-probability + annealed Gumbel
        noise), keep all but the ``masked_schedule`` least confident masked ones."""
        steps = check_steps(self.config.decode_steps if steps is None else steps, "steps")
        if confidence_noise is None:
            confidence_noise = self.config.confidence_noise
        noise_scale = check_noise(confidence_noise, "confidence_noise")
        codes, known = codes.clone(), known.clone()
        n, positions = codes.shape
        if n == 0:
            return codes
        remaining = masked_schedule((~known).sum(dim=1).cpu(), steps).to(self.device)  # (T, n)
        pos = position_embeddings(self, draw.grid)  # (N, D)
        with eval_mode(self):
            for t in range(steps):
                hidden = ~known  # (n, N)
                if not hidden.any():
                    break
                tokens = codes.masked_fill(hidden, self.mask_token)
                # (M, K): the logits of the masked positions, map by map in raster order
                if t == 0 and hidden.all():  # blank maps: their logits depend on the class only
                    rows = 2 * n if draw.guided else n
                    both = self._blank_logits(draw.labels, rows, draw.grid, pos)
                elif draw.guided:  # the same M positions of the conditional and null-class rows
                    both = self._logits(tokens.repeat(2, 1), draw.labels, pos, hidden.repeat(2, 1))
                else:
                    both = self._logits(tokens, draw.labels, pos, hidden)
                if draw.guided:
                    c, u = both.chunk(2)
                    wanted = u + guidance_scale * (c - u)
                else:
                    wanted = both
                drawn, score = sample_and_score(wanted, generator=generator, **options)  # (M,)
                noise = noise_scale * (1 - (t + 1) / steps)
                if noise > 0:
                    u01 = torch.rand(score.shape, generator=generator, device=self.device)
                    gumbel = -torch.log(-torch.log(u01.clamp(1e-20, 1 - 1e-7)))
                    score = score + noise * gumbel
                confidence = torch.full(codes.shape, math.inf, device=self.device)
                confidence[hidden] = score.to(confidence.dtype)
                candidates = codes.clone()
                candidates[hidden] = drawn
                # The remaining[t] least confident positions of each map stay masked; kept
                # positions have confidence +inf, so they rank last and are never re-masked.
                rank = confidence.argsort(dim=1, stable=True).argsort(dim=1)  # (n, N)
                remask = rank < remaining[t][:, None]
                reveal = hidden & ~remask
                codes = torch.where(reveal, candidates, codes)
                known = known | reveal
        return codes
