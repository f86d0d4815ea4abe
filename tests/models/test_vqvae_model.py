"""The VQ-VAE: shapes, index round trip, save/load equality, a short run whose loss falls."""

import math

import pytest
import torch
from helpers import train_with_adam

from vqvae.errors import CheckpointError, ConfigError
from vqvae.models import VQVAE, VQVAEConfig
from vqvae.priors import GatedPixelCNN, PixelCNNConfig
from vqvae.quantizers import QuantizerConfig


def tiny(**kw) -> VQVAE:
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=16, dim=8, kmeans_init=False, dead_code_threshold=0.0)
    return VQVAE(
        VQVAEConfig(
            in_channels=1, image_size=8, downsample=2, hidden=16, res_hidden=8, quantizer=q, **kw
        )
    )


@pytest.mark.parametrize("downsample", [2, 4, 8])
def test_shapes_for_each_downsampling(downsample):
    q = QuantizerConfig(codebook_size=8, dim=4)
    m = VQVAE(
        VQVAEConfig(
            in_channels=3, image_size=32, downsample=downsample, hidden=8, res_hidden=4, quantizer=q
        )
    )
    x = torch.rand(2, 3, 32, 32)
    out = m(x)
    assert out.reconstruction.shape == x.shape
    assert m.encode(x).shape == (2, 32 // downsample, 32 // downsample)


@pytest.mark.parametrize("recon_loss", ["mse", "bce"])
def test_index_round_trip_is_exact(recon_loss):
    m = tiny(recon_loss=recon_loss)
    m.train()
    m(torch.rand(4, 1, 8, 8))  # a training step's worth of state changes first
    m.eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(m(x).reconstruction, m.decode_indices(m.encode(x)))


QUANTIZER_VARIANTS = {
    "vq": {"kind": "vq"},
    "ema": {"kind": "ema"},
    "cosine": {"kind": "cosine"},
    "lowdim": {"kind": "ema", "lookup_dim": 3},
    "rotation": {"kind": "vq", "gradient": "rotation"},
    "residual": {"kind": "residual", "levels": 3},
    "fsq": {"kind": "fsq", "codebook_size": 240},
}


@pytest.mark.parametrize("variant", list(QUANTIZER_VARIANTS))
def test_index_round_trip_is_exact_for_every_quantizer(variant):
    options = {"codebook_size": 16, "dim": 8, **QUANTIZER_VARIANTS[variant]}
    torch.manual_seed(0)
    m = VQVAE(
        VQVAEConfig(
            in_channels=1,
            image_size=8,
            downsample=2,
            hidden=16,
            res_hidden=8,
            quantizer=QuantizerConfig(**options),
        )
    )
    m.train()
    for _ in range(2):  # k-means init, EMA, dead-code reset: state changes first
        m(torch.rand(8, 1, 8, 8))
    m.eval()
    x = torch.rand(4, 1, 8, 8)
    indices = m.encode(x)
    levels = m.quantizer.index_levels
    assert indices.shape == ((4, levels, 4, 4) if levels else (4, 4, 4))
    assert torch.equal(m(x).reconstruction, m.decode_indices(indices))
    with pytest.raises(ValueError, match="expected indices"):
        m.decode_indices(indices[:, 0] if levels else indices[:, None])
    assert m.bits_per_image == pytest.approx(
        16 * max(1, levels) * math.log2(m.quantizer.codebook_size)
    )


def test_bce_binarises_inputs_and_decodes_probabilities():
    m = tiny(recon_loss="bce").eval()
    x = torch.rand(3, 1, 8, 8)
    out = m(x)
    assert out.reconstruction.min() >= 0 and out.reconstruction.max() <= 1
    # inputs 0.6 and 0.9 binarise to the same target, so they give the same loss
    a = m(torch.full((1, 1, 8, 8), 0.6)).recon_loss
    b = m(torch.full((1, 1, 8, 8), 0.9)).recon_loss
    assert torch.equal(a, b)


def test_save_load_equality(tmp_path):
    m = tiny()
    m.train()
    for _ in range(2):
        m(torch.rand(8, 1, 8, 8))  # move EMA buffers away from their init
    m.save_pretrained(tmp_path / "m")
    loaded = VQVAE.from_pretrained(tmp_path / "m")
    assert loaded.config == m.config
    for (k, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(4, 1, 8, 8)
    m.eval()
    assert torch.equal(m(x).reconstruction, loaded(x).reconstruction)


def test_load_refuses_other_architecture_and_corrupt_files(tmp_path):
    GatedPixelCNN(
        PixelCNNConfig(codebook_size=4, channels=4, layers=1, kernel_size=3)
    ).save_pretrained(tmp_path / "prior")
    with pytest.raises(CheckpointError, match="expected a 'VQVAE'"):
        VQVAE.from_pretrained(tmp_path / "prior")
    tiny().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        VQVAE.from_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not found"):
        VQVAE.from_pretrained(tmp_path / "missing")


def test_load_refuses_shape_mismatch(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    cfg = (
        (tmp_path / "m" / "config.json")
        .read_text()
        .replace('"codebook_size": 16', '"codebook_size": 32')
    )
    (tmp_path / "m" / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="shape"):
        VQVAE.from_pretrained(tmp_path / "m")


def test_short_training_run_loss_falls():
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, dim=8)
    m = VQVAE(
        VQVAEConfig(
            in_channels=1, image_size=8, downsample=2, hidden=32, res_hidden=16, quantizer=q
        )
    )
    g = torch.Generator().manual_seed(0)
    # Structured data: random horizontal/vertical bars.
    x = torch.zeros(256, 1, 8, 8)
    rows, cols = torch.randint(8, (256,), generator=g), torch.randint(8, (256,), generator=g)
    x[torch.arange(256), 0, rows, :] = 1.0
    x[torch.arange(256), 0, :, cols] = 1.0
    losses, _ = train_with_adam(m, lambda step: (x[(step * 32) % 256 :][:32], None), 150, 3e-3)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_invalid_configs_rejected():
    with pytest.raises(ConfigError, match="not divisible"):
        VQVAEConfig(in_channels=1, image_size=30, downsample=4)
    with pytest.raises(ConfigError, match="power of two"):
        VQVAEConfig(downsample=3)


def test_wrong_image_shape_and_bad_indices_rejected():
    m = tiny()
    with pytest.raises(ValueError, match="expected images"):
        m(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="indices must lie"):
        m.decode_indices(torch.full((1, 4, 4), 99))
