"""The 1D VQ-VAE: shapes for 4×..64× downsampling, exact index round trip, save/load equality,
random crops inside the real samples, config errors, and a short run whose loss falls."""

from __future__ import annotations

import math

import pytest
import torch

from vqvae.errors import ConfigError
from vqvae.models.audio import AudioVQVAE, AudioVQVAEConfig
from vqvae.quantizers import QuantizerConfig
from vqvae.training import ShuffledBatches, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> AudioVQVAE:
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=16, dim=8, kmeans_init=False, dead_code_threshold=0.0)
    base = dict(length=512, window=256, downsample=8, hidden=32, res_blocks=1, quantizer=q)
    base.update(mel_fft=64, mel_bands=16)
    base.update(kw)
    if base["window"] and base.get("stft_weight", 1.0):
        base.setdefault("stft_sizes", (128, 64))
    return AudioVQVAE(AudioVQVAEConfig(**base))


@pytest.mark.parametrize("downsample", [4, 8, 16, 32, 64])
def test_shapes_for_each_downsampling(downsample):
    m = tiny(downsample=downsample, length=1024, window=0, stft_sizes=(256,))
    x = torch.randn(2, 1, 1024)
    out = m(x)
    assert out.reconstruction.shape == x.shape
    assert m.encode(x).shape == (2, 1024 // downsample)
    assert m.encode(x[:, 0]).shape == (2, 1024 // downsample)  # mono may drop the channel
    assert m.config.codes_per_clip == 1024 // downsample
    assert m.bits_per_second == pytest.approx(8000 / downsample * 4)


def test_other_lengths_and_channels():
    m = tiny(in_channels=3, stft_weight=0.0, mel_weight=0.0, window=0)
    x = torch.randn(2, 3, 64)  # any multiple of downsample, not only config.length
    assert m.decode_indices(m.encode(x)).shape == (2, 3, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        m.encode(torch.randn(2, 3, 60))
    with pytest.raises(ValueError, match=r"\(B, 3, T\)"):
        m.encode(torch.randn(2, 60))


@pytest.mark.parametrize("kind", ["ema", "vq", "residual", "fsq"])
def test_index_round_trip_is_exact(kind):
    extra = {"fsq_levels": (4, 4)} if kind == "fsq" else {}
    k = 16
    q = QuantizerConfig(kind=kind, codebook_size=k, dim=8, kmeans_init=False, **extra)
    m = tiny(quantizer=q)
    m.train()
    m.training_losses((torch.randn(4, 512) * 0.3, None))  # a training step's state changes
    m.eval()
    x = torch.randn(3, 1, 512) * 0.3
    idx = m.encode(x)
    assert torch.equal(m(x).reconstruction, m.decode_indices(idx))
    if kind == "residual":
        assert idx.shape == (3, 2, 64)
        assert m.bits_per_second == pytest.approx(1000 * 2 * math.log2(k))


def test_save_load_equality(tmp_path):
    m = tiny()
    m.training_losses((torch.randn(4, 512) * 0.3, None))
    m.eval()
    m.save_pretrained(tmp_path / "m")
    again = AudioVQVAE.from_pretrained(tmp_path / "m").eval()
    x = torch.randn(2, 1, 512)
    assert again.config == m.config
    assert torch.equal(m.encode(x), again.encode(x))
    assert torch.equal(m.reconstruct(x), again.reconstruct(x))


def test_crops_stay_inside_the_real_samples():
    m = tiny(window=64, length=512, stft_sizes=(64,))
    waves = torch.zeros(200, 1, 512)
    lengths = torch.randint(64, 513, (200,))
    for i, n in enumerate(lengths):
        waves[i, 0, :n] = torch.arange(1, n + 1)  # sample value = position + 1
    torch.manual_seed(1)
    crops = m.crop(waves, lengths)
    assert crops.shape == (200, 1, 64)
    assert (crops > 0).all()  # never reaches padding
    assert (crops[:, 0, 1:] - crops[:, 0, :-1] == 1).all()  # contiguous windows
    starts = crops[:, 0, 0] - 1
    assert starts.max() > 100  # not always the start
    short = m.crop(torch.ones(2, 1, 512), torch.tensor([10, 20]))
    assert short.shape == (2, 1, 64)  # shorter than the window: starts at 0, padding included
    assert short[:, 0, :10].eq(1).all()


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"downsample": 6}, "power of two"),
        ({"length": 100}, "not divisible"),
        ({"window": 100}, "window"),
        ({"window": 1024}, "window"),
        ({"stft_sizes": (512,)}, "exceeds the training crop"),
        ({"time_weight": 0.0, "stft_weight": 0.0, "mel_weight": 0.0}, "not all 0"),
        ({"mel_fft": 1024}, "mel_fft"),
        ({"data_variance": 0.0}, "data_variance"),
    ],
)
def test_config_errors(kw, message):
    base = dict(length=512, window=256, downsample=8, stft_sizes=(128,), mel_fft=128)
    base.update(kw)
    with pytest.raises(ConfigError, match=message):
        AudioVQVAEConfig(**base)


def test_short_training_run_loss_falls():
    torch.manual_seed(0)
    t = torch.arange(512) / 8000
    freqs = torch.linspace(200, 1200, 16)
    waves = 0.5 * torch.sin(2 * math.pi * freqs[:, None] * t)  # (16, 512) tones
    q = QuantizerConfig(codebook_size=16, dim=8)  # k-means init and dead-code resets on
    m = tiny(window=256, data_variance=float(waves.var()), quantizer=q)
    batches = ShuffledBatches((waves, torch.full((16,), 512)), 8, seed=0)
    first = float(m.training_losses(next(batches))["loss"].detach())
    cfg = TrainConfig(steps=80, batch_size=8, lr=3e-3, warmup_steps=5, log_every=80)
    result = fit(m, batches, cfg, show_progress=False)
    assert result.metrics["loss"] < 0.75 * first
    assert math.isfinite(result.metrics["snr"])
