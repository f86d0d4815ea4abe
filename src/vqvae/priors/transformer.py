"""Decoder-only Transformer prior over code sequences and flattened 2D code maps.

GPT-style (Radford et al. 2019): pre-LayerNorm blocks ``x + attn(LN(x))``, ``x + MLP(LN(x))``
with causal self-attention, a final LayerNorm and a linear head to K logits. A map (H, W) is
flattened in raster order; the input at position t is

    start(class)                    if t = 0   (a learned start token per class, or one token)
    token(z_{t-1})                  otherwise
    + row(t // W) + col(t % W)      (layout "2d": learned row and column embeddings)
    + pos(t)                        (layout "1d": a learned embedding per position)
    + class(c)                      (``label_everywhere``: the class at every position too)

so the output at t predicts z_t from z_<t, and the position added is the one being predicted:
the model knows where in the 2D map it is, whatever the map's width.

Sampling caches every layer's keys and values (``KVCache``): each new code costs one token's
worth of computation instead of a pass over the whole prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae import configs
from vqvae.errors import ConfigError
from vqvae.priors.base import (
    PARAMS_PER_TRAIN_CODE,
    AutoregressivePrior,
    check_common_config,
    check_size,
    fill_unset,
    is_int,
    pow2_between,
)
from vqvae.serialization import Pretrained

# The sizes a prior built directly from a config with None sizes gets (release 0.1's
# defaults), and the caps of the sizes fitted to the codes.
FIXED_SIZES = {"dim": 128, "heads": 4, "layers": 4}


@dataclass
class TransformerPriorConfig:
    kind: Literal["transformer"] = "transformer"  # the prior (see vqvae.priors.PRIORS)
    codebook_size: int = 512  # K: number of code indices (vocabulary)
    # The network's size. None: sized from the code grid, K and the number of training maps
    # by ``TransformerPrior.fitted_config`` (what `vqvae train-prior` does; see
    # ``fitted_sizes``). A prior built directly from a config that leaves them None gets
    # FIXED_SIZES (dim 128, 4 heads, 4 layers); its ``config`` then holds those numbers.
    dim: int | None = None  # model width
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
    # Add a class embedding at every position, not only through the start token: a stronger
    # conditioning signal for long sequences (hundreds of audio codes), where a single token
    # at the start has to be found again by attention at every step.
    label_everywhere: bool = False

    def __post_init__(self) -> None:
        check_transformer_fields(self)
        if not isinstance(self.label_everywhere, bool):
            raise ConfigError(
                f"prior.label_everywhere must be true or false, got {self.label_everywhere!r}"
            )


def check_transformer_fields(config: Any) -> None:
    """Checks of the fields a Transformer-shaped prior config has (this prior's and
    MaskGIT's): sizes, dropout, layout and the largest grid."""
    check_common_config(config)
    for name in ("dim", "heads", "layers"):
        check_size(config, "prior", name)
    for name in ("mlp_ratio", "max_rows", "max_cols", "max_length"):
        value = getattr(config, name)
        if not is_int(value) or value < 1:
            raise ConfigError(f"prior.{name} must be an integer >= 1, got {value!r}")
    if config.dim is not None and config.heads is not None and config.dim % config.heads:
        raise ConfigError(
            f"prior.dim ({config.dim}) must be divisible by prior.heads ({config.heads})"
        )
    d = config.dropout
    if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d < 1.0:
        raise ConfigError(f"prior.dropout must be in [0, 1), got {d!r}")
    if config.layout not in ("2d", "1d"):
        raise ConfigError(f"prior.layout must be '2d' or '1d', got {config.layout!r}")


def fitted_sizes(
    grid: tuple[int, ...],
    codebook_size: int,
    dim: int | None = None,
    heads: int | None = None,
    train_items: int | None = None,
) -> dict[str, int]:
    """Width, heads and depth for code maps or sequences ``grid`` of K = ``codebook_size``.

    Attention sees the whole past at any depth, so depth follows the context length N (one
    layer more per doubling: ceil(log2 N) - 2, within [2, 4] — a 2×2 map gets 2, a 7×7 map or
    a sequence of 384 codes 4, release 0.1's default). Width as the PixelCNN's: the power of
    two nearest sqrt(K·N) / 2 within [16, 128], halved (not below 16) while there would be
    more than ``PARAMS_PER_TRAIN_CODE`` parameters per training code when ``train_items`` is
    known; one head per 32 dimensions. A ``dim`` or ``heads`` already set is respected: heads
    then divide dim.
    """
    n = math.prod(grid)
    layers = min(FIXED_SIZES["layers"], max(2, math.ceil(math.log2(max(n, 2))) - 2))
    if dim is None:
        dim = pow2_between(math.sqrt(codebook_size * n) / 2, 16, FIXED_SIZES["dim"])
        if train_items is not None:  # ~12·d² a block (attention 4d², MLP 8d²), K·d twice
            budget = PARAMS_PER_TRAIN_CODE * train_items * n
            while dim > 16 and layers * 12 * dim * dim + 2 * codebook_size * dim > budget:
                dim //= 2
        if heads is not None:
            dim = math.ceil(dim / heads) * heads
    if heads is None:
        heads = max(1, dim // 32)
        while dim % heads:
            heads -= 1
    return {"dim": dim, "heads": heads, "layers": layers}


def check_layout_grid(config: Any, grid: tuple[int, ...], name: str) -> tuple[int, ...]:
    """``grid`` if a prior of ``config.layout`` ("2d": maps up to max_rows × max_cols, "1d":
    sequences up to max_length) models it; ValueError / ConfigError otherwise."""
    c = config
    if c.layout == "2d":
        if len(grid) != 2:
            raise ValueError(f"a 2d {name} prior needs code maps (B, H, W), got {grid}")
        if grid[0] > c.max_rows or grid[1] > c.max_cols:
            raise ConfigError(
                f"grid {grid} exceeds prior.max_rows × max_cols = {c.max_rows} × {c.max_cols}"
            )
    else:
        if len(grid) != 1:
            raise ValueError(f"a 1d {name} prior needs sequences (B, T), got {grid}")
        if grid[0] > c.max_length:
            raise ConfigError(f"length {grid[0]} exceeds prior.max_length={c.max_length}")
    return grid


def position_embeddings(model: nn.Module, grid: tuple[int, ...]) -> Tensor:
    """(N, D) position embeddings of ``grid``'s positions in raster order, from ``model``'s
    ``row`` + ``col`` tables (layout "2d") or its ``pos`` table (layout "1d")."""
    if model.config.layout == "2d":
        h, w = grid
        dev = model.row.weight.device
        rows = model.row(torch.arange(h, device=dev))[:, None]  # (H, 1, D)
        cols = model.col(torch.arange(w, device=dev))[None]  # (1, W, D)
        return (rows + cols).reshape(h * w, -1)
    return model.pos(torch.arange(grid[0], device=model.pos.weight.device))


class KVCache:
    """Keys and values of every layer for positions [0, length): (layers, B, heads, N, dh)."""

    def __init__(self, layers: int, batch: int, heads: int, size: int, head_dim: int, like: Tensor):
        shape = (layers, batch, heads, size, head_dim)
        self.k = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.v = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.length = 0


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``causal``: position t attends to positions <= t only (this
    prior), otherwise to every position (the bidirectional MaskGIT prior, no cache)."""

    def __init__(self, dim: int, heads: int, dropout: float, causal: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        b, t, d = x.shape  # (B, T, D)
        q, k, v = self.qkv(x).split(d, dim=2)
        # (B, T, D) -> (B, heads, T, dh)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        if cache is None:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        else:  # the cache holds the past only: causal attention
            start = cache.length  # the new tokens are positions start .. start + T - 1
            cache.k[layer, :, :, start : start + t] = k
            cache.v[layer, :, :, start : start + t] = v
            k, v = cache.k[layer, :, :, : start + t], cache.v[layer, :, :, : start + t]
            mask = None
            if t > 1:  # query i (position start + i) sees keys 0 .. start + i
                pos = torch.arange(start + t, device=x.device)
                mask = pos[None, :] <= (start + torch.arange(t, device=x.device))[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, heads, T, dh) -> (B, T, D)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """Pre-LN Transformer block (causal or bidirectional attention, see ``SelfAttention``)."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: int, dropout: float, causal: bool = True
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, causal)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Linear(mlp_ratio * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class TransformerPrior(Pretrained, AutoregressivePrior):
    """p(z) = Π_t p(z_t | z_<t [, class]) over flattened code maps or code sequences."""

    config_class = TransformerPriorConfig

    @classmethod
    def fitted_config(
        cls, config, *, grid, codebook_size, num_classes, cond_codebook_size=0, train_items=None
    ):
        """2D maps keep the configured largest grid, grown to hold the map (a residual stack
        of audio codes (L, T) has hundreds of columns); 1D sequences set the "1d" layout and
        ``max_length`` = their length (audio code sequences). Sizes left None follow the
        grid and K (``fitted_sizes``); sizes set are kept."""
        if cond_codebook_size:
            raise ConfigError("prior.kind = 'transformer' cannot be conditioned on a code map")
        fitted = fitted_sizes(tuple(grid), codebook_size, config.dim, config.heads, train_items)
        config = fill_unset(config, "prior", **fitted)
        sizes = {"codebook_size": codebook_size, "num_classes": num_classes}
        if len(grid) == 1:
            sizes.update(layout="1d", max_length=grid[0])
        elif len(grid) != 2:
            raise ConfigError(
                f"prior.kind = 'transformer' models code maps or sequences, not {grid}"
            )
        elif config.layout == "2d":
            sizes.update(
                max_rows=max(config.max_rows, grid[0]), max_cols=max(config.max_cols, grid[1])
            )
        return configs.replace(config, "prior", **sizes)

    def __init__(self, config: TransformerPriorConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerPriorConfig):
            raise TypeError(f"config must be a TransformerPriorConfig, got {type(config).__name__}")
        config = fill_unset(config, "prior", **FIXED_SIZES)  # sizes left None: see the config
        self.config = config
        d = config.dim
        self.token = nn.Embedding(config.codebook_size, d)
        self.start = nn.Embedding(max(1, self.label_rows), d)  # one start token per class
        everywhere = config.label_everywhere and config.num_classes
        # The class, added at every position (``label_everywhere``).
        self.label = nn.Embedding(self.label_rows, d) if everywhere else None
        if config.layout == "2d":
            self.row = nn.Embedding(config.max_rows, d)
            self.col = nn.Embedding(config.max_cols, d)
        else:
            self.pos = nn.Embedding(config.max_length, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(d, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.layers)
        )
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.codebook_size)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ checks
    def _check_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        return check_layout_grid(self.config, grid, "transformer")

    # ----------------------------------------------------------------- forward
    def _positions(self, grid: tuple[int, ...]) -> Tensor:
        """(N, D) position embeddings of the grid's positions in raster order."""
        return position_embeddings(self, grid)

    def _inputs(self, codes: Tensor, labels: Tensor | None, pos: Tensor, start: int, stop: int):
        """Input vectors of positions [start, stop) -> (B, stop - start, D).

        codes: (B, >= stop - 1) raster-order codes; labels: (B,) or None; pos: (N, D)."""
        b = codes.shape[0]
        parts = []
        if start == 0:
            first = labels if labels is not None else torch.zeros(b, dtype=torch.long)
            parts.append(self.start(first.to(self.token.weight.device))[:, None])  # (B, 1, D)
        lo = max(start, 1)
        if stop > lo:
            parts.append(self.token(codes[:, lo - 1 : stop - 1]))  # (B, stop - lo, D)
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if self.label is not None:  # only conditional priors have it, so labels are given
            x = x + self.label(labels.to(self.token.weight.device))[:, None]  # (B, 1, D)
        return x + pos[start:stop]

    def _run(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """Input vectors (B, T, D) -> logits (B, T, K)."""
        x = self.drop(x)
        for n, block in enumerate(self.blocks):
            x = block(x, cache, n)
        if cache is not None:
            cache.length += x.shape[1]
        return self.head(self.ln_f(x))

    def forward(
        self, indices: Tensor, labels: Tensor | None = None, cond: Tensor | None = None
    ) -> Tensor:
        """indices (B, *grid) in [0, K) -> logits (B, K, *grid); logits at t see z_<t only."""
        grid = self._check_indices(indices)
        labels = self._check_labels(labels, indices.shape[0])
        self._check_cond(cond, indices.shape[0], grid)
        b, n = indices.shape[0], math.prod(grid)
        codes = indices.reshape(b, n).long()
        x = self._inputs(codes, labels, self._positions(grid), 0, n)  # (B, N, D)
        logits = self._run(x)  # (B, N, K)
        return logits.transpose(1, 2).reshape(b, -1, *grid)  # (B, K, *grid)

    def _decoder(self, batch, grid, labels, cond, cached):
        return _TransformerDecoder(self, batch, grid, labels, cached)


class _TransformerDecoder:
    """cached: feed only the positions not yet seen, keys/values of the rest come from the
    cache; otherwise recompute the whole prefix for every position."""

    def __init__(self, model: TransformerPrior, batch: int, grid, labels, cached: bool) -> None:
        self.model, self.labels = model, labels
        self.pos = model._positions(grid)  # (N, D)
        self.cache = None
        if cached:
            c = model.config
            like = model.token.weight
            self.cache = KVCache(c.layers, batch, c.heads, len(self.pos), c.dim // c.heads, like)

    def logits(self, codes: Tensor, t: int) -> Tensor:
        if self.cache is None:
            x = self.model._inputs(codes, self.labels, self.pos, 0, t + 1)  # (B, t + 1, D)
            return self.model._run(x)[:, -1]  # (B, K)
        x = self.model._inputs(codes, self.labels, self.pos, self.cache.length, t + 1)
        return self.model._run(x, self.cache)[:, -1]  # (B, K)
