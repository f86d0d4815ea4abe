"""What the codec's files are for each model family: how ``vqvae compress`` reads an input
file or folder into items, and how ``vqvae decompress`` writes items back (PNG, WAV).

One ``ItemFormat`` per ``model.kind`` in ``ITEM_FORMATS`` (images: ``vqvae``, ``vqvae2``;
``audio``); a family without one can still be coded from a data spec and through the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from vqvae.data.audio import fit_length, peak_normalize, read_wav, write_wav
from vqvae.data.common import convert_channels
from vqvae.data.images import IMAGE_EXTENSIONS, find_images, read_image
from vqvae.errors import DataError
from vqvae.files import atomic_path
from vqvae.registry import Registry


@dataclass
class Items:
    """Items as the model's encoder takes them, with what the decoder's files need."""

    inputs: np.ndarray
    names: list[str] | None = None  # file names without extension (None: 00000, 00001, …)
    labels: np.ndarray | None = None
    lengths: np.ndarray | None = None  # audio: real samples of each clip


class ItemFormat:
    unit: str  # what rates are given per: "pixel", "second"
    extensions: frozenset[str]
    suffix: str  # of the files decompress writes

    def find(self, folder: Path) -> list[Path]:
        raise NotImplementedError

    def read(self, model: nn.Module, paths: list[Path]) -> Items:
        raise NotImplementedError

    def units(self, model: nn.Module) -> float:
        """Units of one item (pixels of an image, seconds of a clip)."""
        raise NotImplementedError

    def to_files(self, model: nn.Module, outputs: np.ndarray, lengths: np.ndarray | None):
        """Decoded outputs -> what is written, one array per item (8-bit pixels, samples)."""
        raise NotImplementedError

    def write(self, model: nn.Module, path: Path, item: np.ndarray) -> None:
        raise NotImplementedError


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8, as PNG files store them."""
    pixels = np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0
    return np.round(pixels).astype(np.uint8).transpose(0, 2, 3, 1)


class ImageFormat(ItemFormat):
    unit = "pixel"
    extensions = IMAGE_EXTENSIONS
    suffix = ".png"

    def find(self, folder: Path) -> list[Path]:
        return find_images(folder)

    def read(self, model: nn.Module, paths: list[Path]) -> Items:
        """Each image as ``folder:`` data reads it (shorter side to the model's size, centre
        crop, grey or RGB as the model takes), binarised for a model trained with BCE."""
        c = model.config
        if not paths:
            raise DataError("no images to compress")
        images = np.concatenate(
            [
                convert_channels(read_image(p, c.image_size)[None], c.in_channels, str(p))
                for p in paths
            ]
        )  # (N, C, S, S)
        if c.recon_loss == "bce":
            images = (images > 0.5).astype(np.float32)
        return Items(images, names=[p.stem for p in paths])

    def units(self, model: nn.Module) -> float:
        return float(model.config.image_size**2)

    def to_files(self, model, outputs, lengths):
        return to_uint8(outputs)

    def write(self, model: nn.Module, path: Path, item: np.ndarray) -> None:
        image = Image.fromarray(item[:, :, 0] if item.shape[2] == 1 else item)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")


class AudioFormat(ItemFormat):
    unit = "second"
    extensions = frozenset({".wav"})
    suffix = ".wav"

    def find(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())

    def read(self, model: nn.Module, paths: list[Path]) -> Items:
        """Each clip as audio data reads it: mono, resampled to the model's rate, peak
        normalised when the model was, cut to its loudest ``length`` samples or zero-padded."""
        c = model.config
        waves = np.zeros((len(paths), c.length), np.float32)
        lengths = np.zeros(len(paths), np.int64)
        for i, path in enumerate(paths):
            samples = read_wav(path, c.sample_rate)
            if c.peak_normalize:
                samples = peak_normalize(samples)
            waves[i], lengths[i] = fit_length(samples, c.length)
        return Items(waves, names=[p.stem for p in paths], lengths=lengths)

    def units(self, model: nn.Module) -> float:
        return model.config.length / model.config.sample_rate

    def to_files(self, model, outputs, lengths):
        if lengths is None:
            return list(outputs)
        return [wave[:n] for wave, n in zip(outputs, lengths, strict=True)]

    def write(self, model: nn.Module, path: Path, item: np.ndarray) -> None:
        write_wav(path, item, model.config.sample_rate)


ITEM_FORMATS: Registry[ItemFormat] = Registry("codec item format")
ITEM_FORMATS.register("vqvae", ImageFormat())
ITEM_FORMATS.register("vqvae2", ImageFormat())
ITEM_FORMATS.register("audio", AudioFormat())
