"""Gaussian VAE baseline: the KL term against its closed form, sampling from N(0, I),
reconstruction from the posterior mean, save/load, and a short training run."""

import math

import pytest
import torch
from helpers import train_with_adam

from vqvae.errors import ConfigError
from vqvae.models import GaussianVAE, VAEConfig, build_model, load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def make(**kw) -> GaussianVAE:
    torch.manual_seed(0)
    cfg = dict(
        in_channels=1,
        image_size=8,
        downsample=2,
        hidden=8,
        res_hidden=4,
        res_blocks=1,
        latent_dim=3,
    )
    cfg.update(kw)
    return GaussianVAE(VAEConfig(**cfg))


def images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_kl_term_matches_the_closed_form() -> None:
    model = make(data_variance=0.5, kl_weight=0.3)
    x = images()
    mean, logvar = model.posterior(x)
    # KL(N(m, s²) || N(0, 1)) per latent, by torch.distributions as an independent reference
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected_kl = torch.distributions.kl_divergence(q, p).sum() / x.numel()
    torch.manual_seed(1)
    out = model.training_losses((x, None))
    assert torch.allclose(out["kl"], expected_kl, rtol=1e-5)
    assert torch.allclose(out["loss"], out["recon"] / 0.5 + 0.3 * expected_kl, rtol=1e-5)


def test_samples_decode_standard_normal_draws() -> None:
    model = make(recon_loss="bce").eval()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a, b = model.sample(5, g()), model.sample(5, g())
    assert a.shape == (5, 1, 8, 8) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    z = torch.randn(5, 3, 4, 4, generator=g())
    assert torch.allclose(a, torch.sigmoid(model.decoder(z)))


def test_reconstruction_uses_the_posterior_mean_and_save_load(tmp_path) -> None:
    model = make().eval()
    x = images()
    mean, _ = model.posterior(x)
    assert torch.allclose(model.reconstruct(x), model.decoder(mean) + 0.5)
    loaded = load_model(model.save_pretrained(tmp_path / "vae"))
    assert isinstance(loaded, GaussianVAE) and loaded.config == model.config
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert isinstance(build_model(VAEConfig(in_channels=1, image_size=28)), GaussianVAE)
    assert model.latent_dims == 3 * 16


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"kl_weight": -1.0}, "kl_weight"),
        ({"downsample": 3}, "downsample"),
    ],
)
def test_invalid_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(**kwargs)


def test_short_training_lowers_the_loss() -> None:
    model = make()
    x = images(32)
    losses, _ = train_with_adam(model, lambda _: (x, None), steps=60, lr=3e-3)
    assert math.isfinite(losses[-1]) and losses[-1] < 0.6 * losses[0]
