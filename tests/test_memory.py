"""A model that cannot fit in memory is refused, with its size, before anything is built."""

import pytest
import torch
from helpers import tiny_vqvae

from vqvae.errors import ConfigError
from vqvae.memory import TRAINING_COPIES, check_fits, format_bytes, physical_memory, training_bytes
from vqvae.models import VQVAEConfig, build_model
from vqvae.quantizers import QuantizerConfig


def test_counted_on_the_meta_device_as_built_for_real():
    model = tiny_vqvae(codebook_size=16)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert params > 0 and buffers > 0  # the EMA codebook keeps buffers
    assert (
        training_bytes(lambda: tiny_vqvae(codebook_size=16)) == TRAINING_COPIES * params + buffers
    )


def test_an_absurd_codebook_is_refused_without_allocating():
    q = QuantizerConfig(codebook_size=10**12, dim=64)
    config = VQVAEConfig(in_channels=1, image_size=8, quantizer=q)
    needed = training_bytes(lambda: build_model(config))  # instant: nothing allocated
    assert needed >= 10**12 * 64 * 4  # at least the K×D float codebook
    with pytest.raises(
        ConfigError, match=r"model: needs about \d+ TiB .*this machine has 24.0 GiB"
    ):
        check_fits(lambda: build_model(config), "model", available=24 * 2**30)


def test_a_model_that_fits_passes():
    check_fits(lambda: tiny_vqvae(), "model")
    assert physical_memory() > 2**20


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3.7 * 2**40) == "3.7 TiB"
    assert format_bytes(939 * 2**40) == "939 TiB"


def test_nothing_is_left_on_the_meta_device():
    check_fits(lambda: tiny_vqvae(), "model")
    assert torch.empty(1).device.type == "cpu"
