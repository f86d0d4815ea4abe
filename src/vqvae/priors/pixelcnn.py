"""Gated PixelCNN prior over 2D maps of code indices.

van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders". Each layer has

    y = tanh(W_f * x + V_f^T h) ⊙ σ(W_g * x + V_g^T h)                         (paper eq. 2/4)

with ``*`` a causal convolution and ``h`` a learned per-class vector (the conditioning bias).

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.errors import ConfigError
from vqvae.priors.sampling import _check_options, sample_from_logits
from vqvae.serialization import load_weights, read_config, save_module


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class PixelCNNConfig:
    codebook_size: int = 512  # K: number of code indices (vocabulary)
    channels: int = 128
    layers: int = 12  # gated layers
    kernel_size: int = 5  # odd, >= 3
    num_classes: int = 0  # 0 = unconditional
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name, minimum in (("codebook_size", 1), ("channels", 1), ("layers", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                raise ConfigError(f"prior.{name} must be an integer >= {minimum}, got {value!r}")
        k = self.kernel_size
        if not _is_int(k) or k < 3:
            raise ConfigError(f"prior.kernel_size must be an integer >= 3, got {k!r}")
        if k % 2 == 0:
            raise ConfigError(f"prior.kernel_size must be odd, got {k}")
        if not _is_int(self.num_classes) or self.num_classes < 0:
            raise ConfigError(
                f"prior.num_classes must be an integer >= 0 (0 = unconditional), "
                f"got {self.num_classes!r}"
            )
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d < 1.0:
            raise ConfigError(f"prior.dropout must be in [0, 1), got {d!r}")


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
        self, channels: int, kernel_size: int, mask_type: str, num_classes: int, dropout: float
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
        self.cond = nn.Embedding(num_classes, 2 * c) if num_classes > 0 else None
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

    def forward(self, v: Tensor, h: Tensor, label_emb: Tensor | None) -> tuple[Tensor, ...]:
        # v, h: (B, C, H, W); label_emb: (B, 2C) or None
        v_pre = self._vertical(v)  # W_{k,v} * v          (B, 2C, H, W)
        # W_{k,h} * h + 1×1(shift_down(W_{k,v} * v))       (B, 2C, H, W)
        h_pre = self._horizontal(h) + self.v_to_h(_shift_down(v_pre))
        if label_emb is not None:
            bias = label_emb[:, :, None, None]  # V^T h     (B, 2C, 1, 1)
            v_pre = v_pre + bias
            h_pre = h_pre + bias
        v_out = _gate(v_pre)  # tanh ⊙ σ                    (B, C, H, W)
        gated = self.dropout(_gate(h_pre))  # (B, C, H, W)
        skip = self.skip(gated)  # (B, C, H, W)
        h_res = self.h_out(gated)
        # Residual only for type "B": a type "A" input holds the current code itself.
        h_out = h_res if self.mask_type == "A" else h + h_res
        return v_out, h_out, skip


class GatedPixelCNN(nn.Module):
    """Autoregressive prior p(z) = Π_{raster order} p(z_ij | z_<ij [, class]) over code maps."""

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        if not isinstance(config, PixelCNNConfig):
            raise TypeError(f"config must be a PixelCNNConfig, got {type(config).__name__}")
        self.config = config
        c = config.channels
        self.embedding = nn.Embedding(config.codebook_size, c)  # code index -> (C,)
        self.layers = nn.ModuleList(
            GatedLayer(
                c,
                config.kernel_size,
                "A" if n == 0 else "B",
                config.num_classes,
                config.dropout,
            )
            for n in range(config.layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, config.codebook_size, 1)
        )

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    # ------------------------------------------------------------------ checks
    def _check_indices(self, indices: Tensor) -> None:
        if not isinstance(indices, Tensor) or indices.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.uint8,
            torch.int8,
        ):
            got = indices.dtype if isinstance(indices, Tensor) else type(indices).__name__
            raise ValueError(f"indices must be an integer tensor (B, H, W), got {got}")
        if indices.dim() != 3:
            raise ValueError(f"indices must have shape (B, H, W), got {tuple(indices.shape)}")
        if indices.numel() > 0:
            lo, hi = int(indices.min()), int(indices.max())
            k = self.config.codebook_size
            if lo < 0 or hi >= k:
                raise ConfigError(
                    f"indices must lie in [0, prior.codebook_size={k}), got values in [{lo}, {hi}]"
                )

    def _check_labels(self, labels: Tensor | None, batch: int) -> Tensor | None:
        n_cls = self.config.num_classes
        if labels is None:
            if n_cls > 0:
                raise ConfigError(
                    "labels are required: the prior is class-conditional "
                    f"(prior.num_classes={n_cls})"
                )
            return None
        if n_cls == 0:
            raise ConfigError(
                "labels were given but the prior is unconditional (prior.num_classes=0)"
            )
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
        if labels.dim() == 0:
            labels = labels.expand(batch)
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
        if labels.numel() > 0:
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= n_cls:
                raise ConfigError(
                    f"labels must lie in [0, prior.num_classes={n_cls}), got values in [{lo}, {hi}]"
                )
        return labels.to(device=self.device, dtype=torch.long)

    # ----------------------------------------------------------------- forward
    def forward(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """indices (B, H, W) in [0, K) -> logits (B, K, H, W).

        Logits at (i, j) depend only on indices at rows < i and at (i, j') with j' < j.
        """
        self._check_indices(indices)
        labels = self._check_labels(labels, indices.shape[0])
        x = self.embedding(indices.long()).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        v, h = x, x
        skips = torch.zeros_like(x)  # (B, C, H, W)
        for layer in self.layers:
            label_emb = layer.cond(labels) if layer.cond is not None else None  # (B, 2C)
            v, h, skip = layer(v, h, label_emb)
            skips = skips + skip
        return self.head(skips)  # (B, K, H, W)

    def training_losses(self, batch: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        """Mean cross-entropy (nats per code) of ``batch = (indices, labels or None)``."""
        indices, labels = batch
        logits = self(indices, labels)  # (B, K, H, W)
        loss = F.cross_entropy(logits, indices.long())  # mean over B·H·W codes
        return {"loss": loss, "bits_per_code": loss.detach() / math.log(2)}

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        grid: tuple[int, int],
        labels: Tensor | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n`` code maps of shape ``grid`` = (H, W) in raster order -> (n, H, W) int64.

        ``labels``: (n,) class indices (or one int / 0-d tensor for all) for a conditional
        prior, None for an unconditional one. Runs on the model's device; ``generator`` must live
        on that device too. Naive: one forward pass per position, on the rows drawn so far.
        """
        if not _is_int(n) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if (
            not isinstance(grid, tuple | list)
            or len(grid) != 2
            or not all(_is_int(s) and s >= 1 for s in grid)
        ):
            raise ValueError(f"grid must be (H, W) with positive integers, got {grid!r}")
        _check_options(temperature, top_k, top_p)
        height, width = int(grid[0]), int(grid[1])
        labels = self._check_labels(labels, n)
        out = torch.zeros(n, height, width, dtype=torch.long, device=self.device)
        if n == 0:
            return out
        was_training = self.training
        self.eval()
        try:
            for i in range(height):
                for j in range(width):
                    # Logits at row i depend only on rows <= i (causality), so later rows,
                    # still zeros, need not be computed.
                    logits = self(out[:, : i + 1], labels)[:, :, i, j]  # (n, K)
                    out[:, i, j] = sample_from_logits(
                        logits,
                        temperature=temperature,
                        top_k=top_k,
                        top_p=top_p,
                        generator=generator,
                    )
        finally:
            self.train(was_training)
        return out

    # ----------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``directory``."""
        return save_module(self, self.config, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str | torch.device = "cpu"
    ) -> GatedPixelCNN:
        """Rebuild a model saved by ``save_pretrained`` (in eval mode, on ``map_location``)."""
        config = read_config(directory, cls.__name__, PixelCNNConfig)
        model = cls(config)
        load_weights(model, directory)
        return model.to(map_location).eval()
