"""Helpers the test folders share (fixtures live in conftest.py). Tests ``import helpers``:
pytest puts this folder on ``sys.path`` because conftest.py sits in it."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def tiny_image_model(codebook_size: int = 8) -> list[str]:
    """``key=value`` overrides for the smallest image VQ-VAE the end-to-end tests train: 2×
    downsampling, 8 channels, one residual block, ``codebook_size`` codes of dimension 4."""
    return [
        "model.downsample=2",
        "model.hidden=8",
        "model.res_hidden=4",
        "model.res_blocks=1",
        f"model.quantizer.codebook_size={codebook_size}",
        "model.quantizer.dim=4",
    ]


def tiny_vqvae(codebook_size: int = 8, dim: int = 4):
    """The smallest 8×8 grey-image VQ-VAE the training tests build by hand."""
    from vqvae.models import VQVAE, VQVAEConfig
    from vqvae.quantizers import QuantizerConfig

    q = QuantizerConfig(codebook_size=codebook_size, dim=dim)
    config = VQVAEConfig(
        in_channels=1, image_size=8, downsample=2, hidden=8, res_hidden=4, res_blocks=1, quantizer=q
    )
    return VQVAE(config)


def write_bar_images(folder: Path, n: int) -> str:
    """Write ``folder/tiny.npz``: ``n`` 8×8 images in 3 learnable classes (class c: a white
    bar at rows 2c..2c+1) with their labels. Returns its data spec."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=n)
    images = np.zeros((n, 8, 8), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c : 2 * c + 2, :] = 255
    np.savez(folder / "tiny.npz", images=images, labels=labels)
    return f"npz:{folder / 'tiny.npz'}"


def train_with_adam(
    model: torch.nn.Module,
    batch_at: Callable[[int], tuple],
    steps: int,
    lr: float,
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """``steps`` Adam steps on ``model.training_losses(batch_at(step))``, for tests whose loss
    must fall. Returns the loss of every step and the last step's outputs."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        out = model.training_losses(batch_at(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses, out


def spread_weights(prior: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A prior with random weights large enough that its distributions are far from uniform
    (what the codec tests entropy-code with), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return prior.eval()


# ``vqvae train`` / ``train-prior`` overrides of a tiny audio run (seconds on one thread).
TINY_AUDIO_PRIOR = [
    "transformer.dim=16",
    "transformer.heads=2",
    "transformer.layers=1",
    "prior_train.batch_size=8",
    "prior_train.log_every=5",
    "prior_train.checkpoint_every=0",
]


def tiny_audio(length: int, window: int, downsample: int) -> list[str]:
    """``vqvae train`` overrides of a tiny audio model of clips of ``length`` samples."""
    return [
        f"model.length={length}",
        f"model.window={window}",
        f"model.downsample={downsample}",
        "model.hidden=16",
        "model.res_blocks=1",
        "model.stft_sizes=[128, 64]",
        "model.mel_fft=128",
        "model.mel_bands=16",
        "model.quantizer.codebook_size=16",
        "model.quantizer.dim=8",
        "train.batch_size=8",
        "train.log_every=5",
        "train.checkpoint_every=0",
    ]


def write_tone_clips(root: Path) -> Path:
    """12 FSDD-named WAVs in ``root`` (created): two classes of tones, 300..400 samples at
    8 kHz."""
    from scipy.io import wavfile

    root.mkdir()
    rng = np.random.default_rng(0)
    for d in range(2):
        for i in range(6):
            n = 300 + 20 * i
            x = 0.3 * np.sin(2 * np.pi * (300 + 500 * d) * np.arange(n) / 8000)
            x = x + 0.01 * rng.normal(size=n)
            wavfile.write(root / f"{d}_ann_{i}.wav", 8000, (x * 32767).astype(np.int16))
    return root
