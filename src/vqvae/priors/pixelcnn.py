"""Gated PixelCNN prior over 2D maps of code indices.

van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders". Each layer has

    y = tanh(W_f * x + V_f^T h) ⊙ σ(W_g * x + V_g^T h)                         (paper eq. 2/4)

with ``*`` a causal convolution and ``h`` a learned per-class vector (the conditioning bias).
With a conditioning map (VQ-VAE-2's bottom prior, conditioned on the top codes) each layer also
adds ``V_f * s`` / ``V_g * s`` with ``s`` a spatial feature map of the conditioning codes (paper
eq. 5). The conditioning codes are given in full, so ``s`` may look anywhere.

Two stacks remove the blind spot of a masked k×k convolution:

* the **vertical stack** at (i, j) sees every row ≤ i, columns j-r..j+r (r = k // 2) per layer:
  a (r+1)×k convolution on input zero-padded by r rows on top and r columns on each side.
  It may see the current row, so it is never read directly: it reaches the horizontal stack
  only after a **one-row down shift**, so position (i, j) gets vertical features from rows < i.
* the **horizontal stack** at (i, j) sees row i, columns j-r..j (1×(r+1) convolution, left
  padding r). The first layer is type "A": its convolution is shifted one more column right so
  it covers j-r-1..j-1 and the current position is never seen, and it has no residual (its input
  is the current code's embedding). Later layers are type "B" (they include column j of the
  previous layer's features, which already exclude the current code) and have residuals.

So logits at (i, j) depend on rows above (all columns within the receptive field, including
above-right) and on positions left of (i, j) in row i: exactly the raster-order past.
Skip connections from every horizontal layer are summed and decoded by ReLU-1×1-ReLU-1×1.

Cached sampling (``_CachedDecoder``) uses that structure: the vertical stack of row i is computed
once, when row i is complete, from the cached vertical activations of the r rows above; the
horizontal stack at (i, j) is computed for that one position from the cached horizontal
activations of the r positions to its left. Drawing a whole map then costs about one forward pass
instead of one forward pass per position, and gives the same logits (the same convolutions on
the same inputs, evaluated on crops).
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
FIXED_SIZES = {"channels": 128, "layers": 12, "kernel_size": 5}


@dataclass
class PixelCNNConfig:
    kind: Literal["pixelcnn"] = "pixelcnn"  # the prior (see vqvae.priors.PRIORS)
    codebook_size: int = 512  # K: number of code indices (vocabulary)
    # The network's size. None: sized from the code grid, K and the number of training maps
    # by ``GatedPixelCNN.fitted_config`` (what `vqvae train-prior` does; see ``fitted_sizes``).
    # A prior built directly from a config that leaves them None gets FIXED_SIZES
    # (128 channels, 12 layers, kernel 5); its ``config`` then holds those numbers.
    channels: int | None = None
    layers: int | None = None  # gated layers
    kernel_size: int | None = None  # odd, >= 3
    num_classes: int = 0  # 0 = unconditional
    dropout: float = 0.0
    label_dropout: float = 0.0  # > 0 adds a null class: classifier-free guidance
    cond_codebook_size: int = 0  # > 0: conditioned on a map of codes from this codebook

    def __post_init__(self) -> None:
        check_common_config(self)
        check_size(self, "prior", "channels")
        check_size(self, "prior", "layers")
        check_size(self, "prior", "kernel_size", 3)
        if self.kernel_size is not None and self.kernel_size % 2 == 0:
            raise ConfigError(f"prior.kernel_size must be odd, got {self.kernel_size}")
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d < 1.0:
            raise ConfigError(f"prior.dropout must be in [0, 1), got {d!r}")
        if not is_int(self.cond_codebook_size) or self.cond_codebook_size < 0:
            raise ConfigError(
                f"prior.cond_codebook_size must be an integer >= 0, got {self.cond_codebook_size!r}"
            )


def fitted_sizes(
    grid: tuple[int, int], codebook_size: int, train_items: int | None = None
) -> dict[str, int]:
    """Channels, layers and kernel for code maps ``grid`` of K = ``codebook_size`` codes.

    Receptive field: with kernel k (r = k // 2) and L layers the logits at (i, j) see about
    L·r rows up and L·r columns left and right (the vertical stack grows r a layer, the
    horizontal r a layer), so L·r >= max(H, W) - 1 covers the whole past. Kernel 3 while 12
    layers suffice (maps up to 13×13), kernel 5 beyond; at least 2 layers, at most 12 (a 32×32
    map gets 12 layers of kernel 5, release 0.1's default). Width: the power of two nearest
    sqrt(K·H·W) / 2, within [8, 128] — a 7×7 map of 512 codes gets 64 (as configs/mnist.toml
    sets), a 16×16 map 128 — then halved (not below 8) while the prior would have more than
    ``PARAMS_PER_TRAIN_CODE`` parameters per training code, when ``train_items`` (training
    maps) is known: the built-in digits (1,497 maps of 2×2 codes, K = 512) get 8 channels and 2
    layers. Chosen from measurements on those codes: ``benchmarks/prior_sizing.py``.
    """
    h, w = grid
    span = max(h, w) - 1  # rows above / columns beside the farthest past position
    r = 1 if span <= FIXED_SIZES["layers"] else FIXED_SIZES["kernel_size"] // 2
    layers = min(FIXED_SIZES["layers"], max(2, math.ceil(span / r)))
    channels = pow2_between(math.sqrt(codebook_size * h * w) / 2, 8, FIXED_SIZES["channels"])
    if train_items is not None:
        budget = PARAMS_PER_TRAIN_CODE * train_items * h * w
        while channels > 8 and _parameters(channels, layers, r, codebook_size) > budget:
            channels //= 2
    return {"channels": channels, "layers": layers, "kernel_size": 2 * r + 1}


def _parameters(c: int, layers: int, r: int, k: int) -> int:
    """About how many parameters an unconditional GatedPixelCNN has (weights of each layer's
    (r+1)×(2r+1) vertical, 1×(r+1) horizontal and four 1×1 convolutions; embedding; head)."""
    per_layer = 2 * c * c * (r + 1) * (2 * r + 2) + 6 * c * c
    return layers * per_layer + 2 * k * c + c * c


def _shift_down(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W) with row i holding input row i-1 (row 0 is zeros)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, : x.shape[2], :]


def _gate(x: Tensor) -> Tensor:
    """(B, 2C, H, W) -> (B, C, H, W): tanh(first half) ⊙ σ(second half)."""
    f, g = x.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One gated layer with a vertical and a horizontal stack (paper Figure 2)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        mask_type: str,
        label_rows: int,
        dropout: float,
        conditioned: bool = False,
    ) -> None:
        super().__init__()
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        self.mask_type = mask_type
        c, r = channels, kernel_size // 2
        self.r = r
        # Vertical: (r+1)×k kernel; rows i-r..i, columns j-r..j+r after padding (see _vertical).
        self.v_conv = nn.Conv2d(c, 2 * c, (r + 1, kernel_size))
        # Vertical -> horizontal 1×1 on the down-shifted vertical pre-activations.
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        # Horizontal: 1×(r+1) kernel; columns j-r..j ("B") or j-r-1..j-1 ("A").
        self.h_conv = nn.Conv2d(c, 2 * c, (1, r + 1))
        self.h_out = nn.Conv2d(c, c, 1)  # residual branch of the horizontal stack
        self.skip = nn.Conv2d(c, c, 1)
        self.cond = nn.Embedding(label_rows, 2 * c) if label_rows > 0 else None
        self.cond_proj = nn.Conv2d(c, 2 * c, 1) if conditioned else None  # V * s (eq. 5)
        self.dropout = nn.Dropout(dropout)

    def _vertical(self, v: Tensor) -> Tensor:
        # Pad r columns left/right and r rows on top, none below: output row i covers input
        # rows i-r..i, so the vertical stack never sees rows below the current one.
        return self.v_conv(F.pad(v, (self.r, self.r, self.r, 0)))  # (B, 2C, H, W)

    def _horizontal(self, h: Tensor) -> Tensor:
        width = h.shape[3]
        if self.mask_type == "A":
            # Pad r+1 on the left and keep the first W outputs: output column j covers input
            # columns j-r-1..j-1 (the current position is excluded).
            return self.h_conv(F.pad(h, (self.r + 1, 0, 0, 0)))[:, :, :, :width]
        # Output column j covers input columns j-r..j.
        return self.h_conv(F.pad(h, (self.r, 0, 0, 0)))  # (B, 2C, H, W)

    def bias(self, labels: Tensor | None, cond_features: Tensor | None) -> Tensor | None:
        """V^T h (B, 2C, 1, 1) from the labels plus V * s (B, 2C, H, W) from the map, or None."""
        out = None
        if self.cond is not None and labels is not None:
            out = self.cond(labels)[:, :, None, None]
        if self.cond_proj is not None and cond_features is not None:
            s = self.cond_proj(cond_features)
            out = s if out is None else out + s
        return out

    def _horizontal_out(self, h_pre: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Gated horizontal pre-activations -> (horizontal output, skip)."""
        gated = self.dropout(_gate(h_pre))  # (B, C, H, W)
        h_res = self.h_out(gated)
        # Residual only for type "B": a type "A" input holds the current code itself.
        return (h_res if self.mask_type == "A" else h + h_res), self.skip(gated)

    def forward(self, v: Tensor, h: Tensor, bias: Tensor | None) -> tuple[Tensor, ...]:
        # v, h: (B, C, H, W); bias: broadcastable to (B, 2C, H, W) or None
        v_pre = self._vertical(v)  # W_{k,v} * v          (B, 2C, H, W)
        # W_{k,h} * h + 1×1(shift_down(W_{k,v} * v))       (B, 2C, H, W)
        h_pre = self._horizontal(h) + self.v_to_h(_shift_down(v_pre))
        if bias is not None:
            v_pre = v_pre + bias
            h_pre = h_pre + bias
        v_out = _gate(v_pre)  # tanh ⊙ σ                    (B, C, H, W)
        h_out, skip = self._horizontal_out(h_pre, h)
        return v_out, h_out, skip


class GatedPixelCNN(Pretrained, AutoregressivePrior):
    """Autoregressive prior p(z) = Π_{raster order} p(z_ij | z_<ij [, class] [, cond map])."""

    config_class = PixelCNNConfig

    @classmethod
    def fitted_config(
        cls, config, *, grid, codebook_size, num_classes, cond_codebook_size=0, train_items=None
    ):
        """2D maps only; may be conditioned on a coarser code map (VQ-VAE-2's bottom prior).
        Sizes left None follow the grid and K (``fitted_sizes``); sizes set are kept."""
        if len(grid) != 2:
            raise ConfigError(f"prior.kind = 'pixelcnn' models 2D code maps, not {grid}")
        sizes = fitted_sizes(tuple(grid), codebook_size, train_items)
        config = fill_unset(config, "prior", **sizes)
        return configs.replace(
            config,
            "prior",
            codebook_size=codebook_size,
            num_classes=num_classes,
            cond_codebook_size=cond_codebook_size,
        )

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        if not isinstance(config, PixelCNNConfig):
            raise TypeError(f"config must be a PixelCNNConfig, got {type(config).__name__}")
        config = fill_unset(config, "prior", **FIXED_SIZES)  # sizes left None: see the config
        self.config = config
        c = config.channels
        self.embedding = nn.Embedding(config.codebook_size, c)  # code index -> (C,)
        conditioned = config.cond_codebook_size > 0
        if conditioned:
            # Conditioning codes -> (C,) -> nearest upsampling to the grid -> two 3×3 convs.
            self.cond_embedding = nn.Embedding(config.cond_codebook_size, c)
            self.cond_net = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1)
            )
        self.layers = nn.ModuleList(
            GatedLayer(
                c,
                config.kernel_size,
                "A" if n == 0 else "B",
                self.label_rows,
                config.dropout,
                conditioned,
            )
            for n in range(config.layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, config.codebook_size, 1)
        )

    # ------------------------------------------------------------------ checks
    def _check_grid(self, grid: tuple[int, ...]) -> tuple[int, ...]:
        if len(grid) != 2 or not all(is_int(s) and s >= 1 for s in grid):
            raise ValueError(f"a PixelCNN needs code maps (B, H, W): a 2D grid, got {grid}")
        return grid

    def _check_cond(self, cond: Tensor | None, batch: int, grid: tuple[int, ...]) -> Tensor | None:
        """Conditioning codes (B, h, w) -> features (B, C, H, W) at the grid, or None."""
        k = self.config.cond_codebook_size
        if k == 0:
            return super()._check_cond(cond, batch, grid)
        if cond is None:
            raise ConfigError(
                "cond is required: the prior is conditioned on a code map "
                f"(prior.cond_codebook_size={k})"
            )
        if not isinstance(cond, Tensor) or cond.dtype.is_floating_point or cond.dim() != 3:
            raise ValueError("cond must be an integer tensor (B, h, w) of conditioning codes")
        if cond.shape[0] != batch:
            raise ValueError(f"cond must have {batch} maps, got {cond.shape[0]}")
        if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) >= k):
            raise ConfigError(f"cond codes must lie in [0, prior.cond_codebook_size={k})")
        s = self.cond_embedding(cond.to(self.device).long()).permute(0, 3, 1, 2)  # (B, C, h, w)
        s = F.interpolate(s, size=grid, mode="nearest")  # (B, C, H, W)
        return self.cond_net(s)

    # ----------------------------------------------------------------- forward
    def forward(
        self, indices: Tensor, labels: Tensor | None = None, cond: Tensor | None = None
    ) -> Tensor:
        """indices (B, H, W) in [0, K) -> logits (B, K, H, W).

        Logits at (i, j) depend only on indices at rows < i and at (i, j') with j' < j (and on
        the labels and the whole conditioning map ``cond`` (B, h, w), when the prior has them).
        """
        grid = self._check_indices(indices)
        labels = self._check_labels(labels, indices.shape[0])
        cond_features = self._check_cond(cond, indices.shape[0], grid)
        return self._logits(indices, labels, cond_features)

    def _logits(self, indices: Tensor, labels: Tensor | None, cond_features: Tensor | None):
        x = self.embedding(indices.long()).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        v, h = x, x
        skips = torch.zeros_like(x)  # (B, C, H, W)
        for layer in self.layers:
            v, h, skip = layer(v, h, layer.bias(labels, cond_features))
            skips = skips + skip
        return self.head(skips)  # (B, K, H, W)

    def _decoder(self, batch, grid, labels, cond, cached):
        if cached:
            return _CachedDecoder(self, batch, grid, labels, cond)
        return _FullDecoder(self, grid, labels, cond)


class _FullDecoder:
    """One forward pass per position, over the rows drawn so far (logits at row i depend only
    on rows <= i, so later rows need not be computed)."""

    def __init__(self, model: GatedPixelCNN, grid, labels, cond_features) -> None:
        self.model, self.width = model, grid[1]
        self.labels, self.cond_features = labels, cond_features

    def logits(self, codes: Tensor, t: int) -> Tensor:
        i, j = divmod(t, self.width)
        rows = codes[:, : (i + 1) * self.width].reshape(len(codes), i + 1, self.width)
        cond = None if self.cond_features is None else self.cond_features[:, :, : i + 1]
        return self.model._logits(rows, self.labels, cond)[:, :, i, j]  # (B, K)


class _CachedDecoder:
    """Incremental decoding: each row's vertical stack once, each position's horizontal stack
    once (see the module docstring). Same convolutions on crops -> same logits."""

    def __init__(self, model: GatedPixelCNN, batch: int, grid, labels, cond_features) -> None:
        self.model = model
        self.height, self.width = grid
        c, n_layers = model.config.channels, len(model.layers)
        self.r = model.config.kernel_size // 2
        p = next(model.parameters())

        def new(ch: int) -> Tensor:
            return torch.zeros(batch, ch, *grid, dtype=p.dtype, device=p.device)

        # v_in[l]: input of layer l's vertical conv (v_in[0] = code embeddings);
        # v_pre[l]: its pre-activation without bias (read one row lower by v_to_h);
        # h_in[l]: input of layer l's horizontal conv (h_in[0] = code embeddings too).
        self.v_in = [new(c) for _ in range(n_layers)]
        self.v_pre = [new(2 * c) for _ in range(n_layers)]
        self.h_in = [self.v_in[0]] + [new(c) for _ in range(n_layers - 1)]
        self.bias = [layer.bias(labels, cond_features) for layer in model.layers]
        self.zero_shift = torch.zeros(batch, 2 * c, 1, 1, dtype=p.dtype, device=p.device)
        self.embedded = 0  # positions whose code embedding is in v_in[0]
        self.next = 0  # next position whose horizontal stack is still to be computed

    def _bias_at(self, l: int, rows: slice, cols: slice) -> Tensor | None:
        b = self.bias[l]
        if b is None or b.shape[2] == 1:  # label bias (B, 2C, 1, 1) or none
            return b
        return b[:, :, rows, cols]

    def _vertical_row(self, i: int) -> None:
        """Vertical stack of row i (all layers), from the r rows above it."""
        top = max(0, i - self.r)
        for l, layer in enumerate(self.model.layers):
            v_pre = layer._vertical(self.v_in[l][:, :, top : i + 1])[:, :, -1:]  # (B, 2C, 1, W)
            self.v_pre[l][:, :, i : i + 1] = v_pre
            if l + 1 < len(self.model.layers):
                bias = self._bias_at(l, slice(i, i + 1), slice(None))
                self.v_in[l + 1][:, :, i : i + 1] = _gate(v_pre if bias is None else v_pre + bias)

    def _horizontal_at(self, i: int, j: int) -> Tensor:
        """Horizontal stacks at (i, j) -> logits (B, K)."""
        left = max(0, j - self.r - 1)
        skips = 0
        for l, layer in enumerate(self.model.layers):
            window = self.h_in[l][:, :, i : i + 1, left : j + 1]  # (B, C, 1, <= r+2)
            h_pre = layer._horizontal(window)[:, :, :, -1:]  # (B, 2C, 1, 1)
            shifted = self.v_pre[l][:, :, i - 1 : i, j : j + 1] if i > 0 else self.zero_shift
            h_pre = h_pre + layer.v_to_h(shifted)
            bias = self._bias_at(l, slice(i, i + 1), slice(j, j + 1))
            if bias is not None:
                h_pre = h_pre + bias
            h_out, skip = layer._horizontal_out(h_pre, self.h_in[l][:, :, i : i + 1, j : j + 1])
            if l + 1 < len(self.model.layers):
                self.h_in[l + 1][:, :, i : i + 1, j : j + 1] = h_out
            skips = skips + skip
        return self.model.head(skips)[:, :, 0, 0]  # (B, K)

    def logits(self, codes: Tensor, t: int) -> Tensor:
        out = None
        for q in range(self.next, t + 1):
            if self.embedded < q:  # codes before q are known: embed them
                idx = torch.arange(self.embedded, q)
                emb = self.model.embedding(codes[:, self.embedded : q])  # (B, n, C)
                self.v_in[0][:, :, idx // self.width, idx % self.width] = emb.permute(0, 2, 1)
                self.embedded = q
            i, j = divmod(q, self.width)
            if j == 0 and i > 0:
                self._vertical_row(i - 1)  # row i-1 is complete
            out = self._horizontal_at(i, j)
        self.next = t + 1
        return out
