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
from typing import Literal

import torch
from torch import Tensor, nn

from vqvae.errors import ConfigError
from vqvae.models.image_config import ImageModelConfig
from vqvae.nets import Decoder2d, Encoder2d
from vqvae.serialization import Pretrained


@dataclass
class VAEConfig(ImageModelConfig):
    kind: Literal["vae"] = "vae"
    latent_dim: int = 64  # per grid position (the VQ-VAE's code dimension D)
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if not self.kl_weight >= 0:
            raise ConfigError(f"model.kl_weight must be >= 0, got {self.kl_weight}")


class GaussianVAE(Pretrained, nn.Module):
    config_class = VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        config.require_shape()
        self.config = config
        c = config
        args = (c.width, c.res_blocks, c.res_hidden)
        self.encoder = Encoder2d(c.in_channels, *args, 2 * c.latent_dim, c.downsample)
        self.decoder = Decoder2d(c.latent_dim, *args, c.in_channels, c.downsample)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images -> (mean, log-variance), each (B, latent_dim, h, w)."""
        self.config.check_images(x)
        mean, logvar = self.encoder(self.config.target(x) - 0.5).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def training_losses(self, batch: tuple[Tensor, Tensor | None]) -> dict[str, Tensor]:
        x = batch[0]
        target = self.config.target(x)
        mean, logvar = self.posterior(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)  # reparameterisation
        out = self.decoder(z)
        recon, scaled = self.config.reconstruction_loss(out, target)
        # KL(N(m, s²) || N(0, 1)) = ½ (m² + s² − 1 − log s²), summed per image, per element.
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum() / target.numel()
        psnr = self.config.batch_psnr(self.config.to_images(out), target, recon)
        return {
            "loss": scaled + self.config.kl_weight * kl,
            "recon": recon.detach(),
            "kl": kl.detach(),
            "psnr": psnr,
        }

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean (eval-mode behaviour)."""
        return self.config.to_images(self.decoder(self.posterior(x)[0]))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images decoded from z ~ N(0, I) -> (n, C, H, W) in data space."""
        h, w = self.config.grid
        p = next(self.parameters())
        z = torch.randn(n, self.config.latent_dim, h, w, generator=generator, device=p.device)
        return self.config.to_images(self.decoder(z.to(p.dtype)))

    @property
    def latent_dims(self) -> int:
        return self.config.latent_dim * math.prod(self.config.grid)
