"""VQ-VAE-2: shapes of both code maps, the hierarchical index round trip, the bottom codes'
dependence on the top, config checks, save/load and a short training run."""

import pytest
import torch
from helpers import train_with_adam

from vqvae.errors import CheckpointError, ConfigError
from vqvae.models import VQVAE2, VQVAE2Config, build_model, load_model
from vqvae.quantizers import QuantizerConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def make(**kw) -> VQVAE2:
    torch.manual_seed(0)
    cfg = dict(
        in_channels=1,
        image_size=16,
        downsample=2,
        top_downsample=2,
        hidden=16,
        res_hidden=8,
        res_blocks=1,
        quantizer=QuantizerConfig(codebook_size=16, dim=8, kmeans_init=False),
        top_quantizer=QuantizerConfig(codebook_size=8, dim=4, kmeans_init=False),
    )
    cfg.update(kw)
    return VQVAE2(VQVAE2Config(**cfg))


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_encode_gives_a_top_and_a_bottom_map() -> None:
    model = make()
    top, bottom = model.encode(images())
    assert top.shape == (4, 4, 4) and bottom.shape == (4, 8, 8)
    assert model.config.top_grid == (4, 4) and model.config.grid == (8, 8)
    assert int(top.max()) < 8 and int(bottom.max()) < 16
    assert model.bits_per_image == 16 * 3 + 64 * 4


@pytest.mark.parametrize("recon_loss", ["mse", "bce"])
def test_hierarchical_round_trip_encode_decode(recon_loss: str) -> None:
    # decode_indices(encode(x)) is exactly the eval-mode forward pass.
    model = make(recon_loss=recon_loss)
    x = images()
    model.train()
    model(x)  # a training step's side effects (EMA, usage) must not break the round trip
    model.eval()
    with torch.no_grad():
        forward = model(x).reconstruction
    top, bottom = model.encode(x)
    assert torch.equal(model.decode_indices(top, bottom), forward)
    assert torch.equal(model.reconstruct(x), forward)
    assert model.training is False


def test_bottom_codes_depend_on_the_top_codes() -> None:
    # The bottom quantizer sees the decoded top codes: changing only the top path's weights
    # changes the bottom codes.
    model = make().eval()
    x = images(8)
    _, before = model.encode(x)
    with torch.no_grad():
        model.top_decoder.body[0].weight.mul_(50)
    _, after = model.encode(x)
    assert not torch.equal(before, after)


def test_decoding_uses_both_levels() -> None:
    model = make().eval()
    top, bottom = model.encode(images())
    base = model.decode_indices(top, bottom)
    assert not torch.equal(model.decode_indices((top + 1) % 8, bottom), base)
    assert not torch.equal(model.decode_indices(top, (bottom + 1) % 16), base)
    with pytest.raises(ValueError, match="top"):
        model.decode_indices(top[0], bottom)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"image_size": 18}, "not divisible"),
        ({"top_downsample": 3}, "top_downsample"),
        ({"downsample": 1}, "downsample"),
        ({"hidden": 1}, "hidden"),
    ],
)
def test_invalid_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(**kwargs)


def test_save_load_and_factory(tmp_path) -> None:
    model = make().eval()
    path = model.save_pretrained(tmp_path / "m")
    loaded = load_model(path).eval()
    assert isinstance(loaded, VQVAE2) and loaded.config == model.config
    x = images()
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert isinstance(build_model(model.config), VQVAE2)
    from vqvae.models import VQVAE

    with pytest.raises(CheckpointError, match="VQVAE2"):
        VQVAE.from_pretrained(path)


def test_short_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = make()
    x = (images(16) > 0.7).float()
    losses, out = train_with_adam(model, lambda _: (x, None), steps=30, lr=2e-3)
    assert {"recon", "psnr", "top_perplexity", "code_counts"} <= set(out)
    assert losses[-1] < 0.6 * losses[0]
