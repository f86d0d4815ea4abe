"""What every convolutional image model shares: its input, its encoder/decoder size and its
reconstruction term. The VQ-VAE, VQ-VAE-2 and the Gaussian VAE configs extend it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.errors import ConfigError

WIDE, NARROW = 128, 64  # encoder/decoder channels for ordinary and for tiny training sets
TINY_VALUES = 2**22  # a training set with fewer pixel values than this is tiny


def fitted_hidden(items: int, values_per_item: int) -> int:
    """Channels for a training set of ``items`` images of ``values_per_item`` values each: the
    Sonnet example's 128, or 64 when the set is tiny (fewer than 2^22 values: the 1,797 8×8
    digits have 115,008; MNIST has 47 million), where the wide network only adds size and time
    (measured in benchmarks/results/width_sizing.json)."""
    return NARROW if items * values_per_item < TINY_VALUES else WIDE


def is_power_of_two(n: int) -> bool:
    return n >= 2 and not n & (n - 1)


@dataclass
class ImageModelConfig:
    # Taken from the data by `vqvae train` unless set: None until then (a model built by hand
    # needs them set; see ``require_shape``).
    in_channels: int | None = None
    image_size: int | None = None
    downsample: int = 4  # latent grid = image_size / downsample
    # Encoder/decoder channels. None: fitted to the training set by `vqvae train`
    # (``fitted_hidden``: 64 for tiny data, 128 otherwise); a model built by hand gets 128.
    hidden: int | None = None
    res_blocks: int = 2
    res_hidden: int = 32
    recon_loss: Literal["mse", "bce"] = "mse"  # bce: inputs binarised at 0.5, decoder emits logits
    # MSE is divided by the training data's variance (as in the Sonnet example) so that the
    # reconstruction and commitment terms keep the balance the paper's β assumes. None: taken
    # from the training images by `vqvae train` (1.0 for BCE and for a model built without data).
    data_variance: float | None = None

    def __post_init__(self) -> None:
        if self.in_channels is not None and self.in_channels < 1:
            raise ConfigError(f"model.in_channels must be >= 1, got {self.in_channels}")
        if not is_power_of_two(self.downsample):
            raise ConfigError(
                f"model.downsample must be a power of two >= 2, got {self.downsample}"
            )
        for name in ("hidden", "res_hidden"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ConfigError(f"model.{name} must be >= 2, got {getattr(self, name)}")
        if self.res_blocks < 0:
            raise ConfigError(f"model.res_blocks must be >= 0, got {self.res_blocks}")
        if self.data_variance is not None and not self.data_variance > 0:
            raise ConfigError(f"model.data_variance must be > 0, got {self.data_variance}")
        if self.image_size is not None and (
            self.image_size < 1 or self.image_size % self.downsample
        ):
            raise ConfigError(
                f"model.image_size {self.image_size} is not divisible by "
                f"model.downsample {self.downsample}"
            )

    def require_shape(self) -> None:
        """Refuse to build a model whose input shape is still to be taken from the data."""
        for name in ("in_channels", "image_size"):
            if getattr(self, name) is None:
                raise ConfigError(
                    f"model.{name} is taken from the data by `vqvae train`; set it to build a "
                    "model without data"
                )

    @property
    def width(self) -> int:
        """The encoder/decoder channels: ``hidden``, or 128 when it is left to the data."""
        return self.hidden if self.hidden is not None else WIDE

    @property
    def grid(self) -> tuple[int, int]:
        self.require_shape()
        side = self.image_size // self.downsample
        return side, side

    def check_images(self, x: Tensor) -> None:
        c, s = self.in_channels, self.image_size
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"expected images (B, {c}, {s}, {s}), got shape {tuple(x.shape)}")

    def target(self, x: Tensor) -> Tensor:
        """What the decoder reconstructs: the images, binarised at 0.5 for BCE."""
        return (x > 0.5).to(x.dtype) if self.recon_loss == "bce" else x

    def to_images(self, out: Tensor) -> Tensor:
        """Decoder output -> images in data space (the decoder works around 0)."""
        return torch.sigmoid(out) if self.recon_loss == "bce" else out + 0.5

    @torch.no_grad()
    def batch_psnr(self, images: Tensor, target: Tensor, raw_loss: Tensor) -> Tensor:
        """PSNR of a training batch, for logs and the progress bar. With the MSE loss it is read
        off the loss already computed (``raw_loss``, the MSE of the unclamped reconstruction)
        instead of another pass over the batch; with BCE it is the MSE of ``images``, clamped."""
        if self.recon_loss == "mse":
            mse = raw_loss.detach()
        else:
            mse = F.mse_loss(images.clamp(0, 1), target)
        return -10 * torch.log10(mse.clamp_min(1e-10))

    def reconstruction_loss(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(raw per-element loss for reports, the term that enters the objective), in float32
        also when the decoder ran in bfloat16 (``train.precision = "bf16"``)."""
        out = out.float()
        if self.recon_loss == "bce":
            raw = F.binary_cross_entropy_with_logits(out, target)
            return raw, raw
        raw = F.mse_loss(out + 0.5, target)
        return raw, raw / (self.data_variance or 1.0)
