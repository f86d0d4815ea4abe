"""bf16 training (``train.precision = "bf16"``): the quantizers run in float32 under autocast
(the same indices and codebook statistics as the fp32 path for the same z_e), the encoder and
decoder in bfloat16, and a short bf16 run's loss falls."""

import json

import pytest
import torch
from helpers import tiny_image_model, write_bar_images

from vqvae.cli.main import main
from vqvae.errors import ConfigError
from vqvae.quantizers import (
    FSQ,
    CosineVectorQuantizer,
    EMAVectorQuantizer,
    LowDimQuantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
    native,
)
from vqvae.training import ShuffledBatches, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")

QUANTIZERS = {
    "ema": lambda: EMAVectorQuantizer(64, 8),
    "vq": lambda: VectorQuantizer(64, 8),
    "cosine": lambda: CosineVectorQuantizer(64, 8),
    "lowdim": lambda: LowDimQuantizer(8, EMAVectorQuantizer(64, 3)),
    "residual": lambda: ResidualVectorQuantizer([EMAVectorQuantizer(64, 8) for _ in range(2)]),
    "fsq": lambda: FSQ((4, 4, 4), 8),
}


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("native_kernels", [True, False], ids=["kernel", "pytorch"])
@pytest.mark.parametrize("kind", sorted(QUANTIZERS))
def test_quantizer_under_autocast_is_the_fp32_path(kind, native_kernels, monkeypatch):
    """Training steps and an eval forward, under bf16 autocast and without, from the same
    z_e: the same indices, losses, quantized values and buffers (EMA statistics, usage)."""
    if not native_kernels:  # PyTorch's search: its product would run in bfloat16 under autocast
        monkeypatch.setattr(native, "library", lambda: None)
    torch.manual_seed(0)
    plain, mixed = QUANTIZERS[kind](), QUANTIZERS[kind]()
    mixed.load_state_dict(plain.state_dict())
    for step in range(3):
        z = torch.randn(16, 8, 4, 4, generator=torch.Generator().manual_seed(step))
        # the encoder's bfloat16 output, as the fp32 path would see it after the cast up
        z_bf16 = z.bfloat16()
        torch.manual_seed(step)  # k-means++ and dead-code resets draw the same numbers
        want = plain(z_bf16.float())
        torch.manual_seed(step)
        with bf16():
            got = mixed(z_bf16)
        assert torch.equal(got.indices, want.indices)
        assert got.quantized.dtype == torch.float32
        assert torch.equal(got.quantized, want.quantized)
        assert torch.equal(got.commitment_loss, want.commitment_loss)
        assert torch.equal(got.codebook_loss, want.codebook_loss)
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), mixed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    plain.eval(), mixed.eval()
    z = torch.randn(4, 8, 4, 4)
    with bf16():
        got = mixed(z)
    assert torch.equal(got.indices, plain(z).indices)


def test_bf16_search_would_differ():
    """Why the quantizer leaves autocast: the same search with bfloat16 products picks other
    codes for some vectors (the test above would fail without it)."""
    torch.manual_seed(0)
    z, codebook = torch.randn(2048, 64), torch.randn(512, 64) * 0.1 + 0.5
    codes_sq = (codebook * codebook).sum(1)
    scores = codes_sq - 2 * z @ codebook.t()
    with bf16():
        product = torch.matmul(z, codebook.t())
    assert product.dtype == torch.bfloat16
    low = codes_sq - 2 * product.float()
    assert (low.argmin(1) != scores.argmin(1)).float().mean() > 0.005  # 1.7% here


def _batches():
    """64 learnable 8×8 images: a bright bar at one of three heights, on faint noise."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 8, 8, generator=g) * 0.1
    for i, row in enumerate(torch.randint(0, 3, (64,), generator=g).tolist()):
        x[i, 0, 2 * row : 2 * row + 2] = 1.0
    return ShuffledBatches((x, None), 16, seed=0)


def test_bf16_run_trains_with_bf16_layers_and_fp32_quantizer(tmp_path):
    from helpers import tiny_vqvae

    torch.manual_seed(0)
    model = tiny_vqvae(codebook_size=8, dim=4)
    seen = {}

    def record(name, what):
        def hook(module, inputs, output):  # returns None: the output is kept
            seen[name] = what(inputs, output)

        return hook

    model.encoder.register_forward_hook(record("encoder", lambda i, o: o.dtype))
    model.decoder.register_forward_hook(record("decoder", lambda i, o: o.dtype))
    model.quantizer.register_forward_hook(
        record("quantizer", lambda i, o: (i[0].dtype, o.quantized.dtype))
    )
    config = TrainConfig(steps=80, batch_size=16, log_every=10, precision="bf16", lr=3e-3)
    fit(model, _batches(), config, run_dir=tmp_path, show_progress=False)
    assert seen == {
        "encoder": torch.bfloat16,
        "decoder": torch.bfloat16,
        "quantizer": (torch.float32, torch.float32),
    }
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]  # not the threads row
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_cli_bf16_run_and_unknown_precision(tmp_path, capsys):
    spec = write_bar_images(tmp_path, 48)
    common = ["train", "--data", spec, "--steps", "10", *tiny_image_model(codebook_size=8)]
    assert main([*common, "--out", str(tmp_path / "run"), "train.precision=bf16"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["precision"] == "bf16"
    assert main([*common, "--out", str(tmp_path / "bad"), "train.precision=fp16"]) == 2
    assert "train.precision" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError):
        from vqvae import configs

        configs.from_dict(TrainConfig, {"precision": "fp8"}, "train")
