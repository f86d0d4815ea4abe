"""A Gaussian VAE (Kingma & Welling 2014) with the VQ-VAE's encoder and decoder: the baseline
that makes "VQ-VAE samples are sharper" a measurement.

The encoder emits a mean and a log-variance for a ``latent_dim`` Gaussian at every grid
position (same grid as the VQ-VAE's code map); the prior is N(0, I) at every position; samples
are decoded draws from that prior. Loss per input element (a scaled negative ELBO):

    reconstruction + kl_weight · KL(q(z|x) || N(0, I)) / (elements per image)

with the VQ-VAE's reconstruction term: BCE (binarised inputs, Bernoulli decoder) or
MSE / data_variance (a Gaussian decoder with variance data_variance / 2 per element).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae import serialization
from vqvae.errors import ConfigError
from vqvae.nets import Decoder2d, Encoder2d


@dataclass
class VAEConfig:
    kind: Literal["vae"] = "vae"
    in_channels: int = 1
    image_size: int = 28
    downsample: int = 4  # latent grid = image_size / downsample
    hidden: int = 128
    res_blocks: int = 2
    res_hidden: int = 32
    recon_loss: Literal["mse", "bce"] = "mse"
    data_variance: float = 1.0
    latent_dim: int = 64  # per grid position (the VQ-VAE's code dimension D)
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ConfigError(f"model.in_channels must be >= 1, got {self.in_channels}")
        d = self.downsample
        if d < 2 or d & (d - 1):
            raise ConfigError(f"model.downsample must be a power of two >= 2, got {d}")
        if self.image_size < 1 or self.image_size % d:
            raise ConfigError(
                f"model.image_size {self.image_size} is not divisible by model.downsample {d}"
            )
        for name in ("hidden", "res_hidden"):
            if getattr(self, name) < 2:
                raise ConfigError(f"model.{name} must be >= 2, got {getattr(self, name)}")
        if self.res_blocks < 0:
            raise ConfigError(f"model.res_blocks must be >= 0, got {self.res_blocks}")
        if not self.data_variance > 0:
            raise ConfigError(f"model.data_variance must be > 0, got {self.data_variance}")
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if not self.kl_weight >= 0:
            raise ConfigError(f"model.kl_weight must be >= 0, got {self.kl_weight}")

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.downsample
        return side, side


class GaussianVAE(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        args = (c.hidden, c.res_blocks, c.res_hidden)
        self.encoder = Encoder2d(c.in_channels, *args, 2 * c.latent_dim, c.downsample)
        self.decoder = Decoder2d(c.latent_dim, *args, c.in_channels, c.downsample)

    def _target(self, x: Tensor) -> Tensor:
        return (x > 0.5).to(x.dtype) if self.config.recon_loss == "bce" else x

    def _to_data(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out) if self.config.recon_loss == "bce" else out + 0.5

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images -> (mean, log-variance), each (B, latent_dim, h, w)."""
        self._check_images(x)
        mean, logvar = self.encoder(self._target(x) - 0.5).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def training_losses(self, batch: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        x = batch[0]
        target = self._target(x)
        mean, logvar = self.posterior(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)  # reparameterisation
        out = self.decoder(z)
        if self.config.recon_loss == "bce":
            recon = F.binary_cross_entropy_with_logits(out, target)
            scaled = recon
        else:
            recon = F.mse_loss(out + 0.5, target)
            scaled = recon / self.config.data_variance
        # KL(N(m, s²) || N(0, 1)) = ½ (m² + s² − 1 − log s²), summed per image, per element.
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum() / target.numel()
        with torch.no_grad():
            mse = F.mse_loss(self._to_data(out).clamp(0, 1), target)
        return {
            "loss": scaled + self.config.kl_weight * kl,
            "recon": recon.detach(),
            "kl": kl.detach(),
            "psnr": -10 * torch.log10(mse.clamp_min(1e-10)),
        }

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean (eval-mode behaviour)."""
        return self._to_data(self.decoder(self.posterior(x)[0]))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images decoded from z ~ N(0, I) -> (n, C, H, W) in data space."""
        h, w = self.config.grid
        p = next(self.parameters())
        z = torch.randn(n, self.config.latent_dim, h, w, generator=generator, device=p.device)
        return self._to_data(self.decoder(z.to(p.dtype)))

    @property
    def latent_dims(self) -> int:
        return self.config.latent_dim * math.prod(self.config.grid)

    def _check_images(self, x: Tensor) -> None:
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"expected images (B, {c}, {s}, {s}), got shape {tuple(x.shape)}")

    def save_pretrained(self, directory: str | Path) -> Path:
        return serialization.save_module(self, self.config, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> GaussianVAE:
        config = serialization.read_config(directory, cls.__name__, VAEConfig)
        model = serialization.load_weights(cls(config), directory)
        return model.to(map_location)
