"""Gated PixelCNN: config checks, input checks, conditioning, sampling, save/load, training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import train_with_adam

from vqvae import configs
from vqvae.errors import CheckpointError, ConfigError
from vqvae.priors import GatedPixelCNN, PixelCNNConfig
from vqvae.serialization import save_module

K = 7


pytestmark = pytest.mark.usefixtures("one_thread")


def make(num_classes: int = 0, seed: int = 0, **kw) -> GatedPixelCNN:
    torch.manual_seed(seed)
    cfg = dict(codebook_size=K, channels=16, layers=3, kernel_size=3, num_classes=num_classes)
    cfg.update(kw)
    return GatedPixelCNN(PixelCNNConfig(**cfg))


def codes(b: int = 3, h: int = 5, w: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (b, h, w), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs,option",
    [
        ({"kernel_size": 4}, "prior.kernel_size must be odd, got 4"),
        ({"kernel_size": 1}, "prior.kernel_size"),
        ({"codebook_size": 0}, "prior.codebook_size"),
        ({"channels": 0}, "prior.channels"),
        ({"layers": 0}, "prior.layers"),
        ({"num_classes": -1}, "prior.num_classes"),
        ({"dropout": 1.0}, "prior.dropout"),
        ({"dropout": -0.1}, "prior.dropout"),
        ({"channels": 2.0}, "prior.channels"),
    ],
)
def test_invalid_config_raises_config_error(kwargs: dict, option: str) -> None:
    with pytest.raises(ConfigError, match=option.replace(".", r"\.")) as info:
        PixelCNNConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_config_round_trips_through_plain_data() -> None:
    cfg = PixelCNNConfig(codebook_size=8, channels=4, layers=2, num_classes=3, dropout=0.1)
    assert configs.from_dict(PixelCNNConfig, configs.to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="kernel_size"):
        configs.from_dict(PixelCNNConfig, {"kernel_size": 6})


# ------------------------------------------------------------------ forward


def test_forward_shape_and_loss() -> None:
    model = make()
    x = codes()
    logits = model(x)
    assert logits.shape == (3, K, 5, 6) and logits.dtype == torch.float32
    losses = model.training_losses((x, None))
    assert losses["loss"].requires_grad and losses["loss"].dim() == 0
    expected = torch.nn.functional.cross_entropy(logits, x)
    assert torch.allclose(losses["loss"], expected)
    assert not losses["bits_per_code"].requires_grad
    assert math.isclose(losses["bits_per_code"].item(), expected.item() / math.log(2), rel_tol=1e-6)


@pytest.mark.parametrize("bad", [-1, K])
def test_indices_out_of_range_raise(bad: int) -> None:
    x = codes()
    x[1, 2, 3] = bad
    with pytest.raises(ValueError, match="codebook_size"):
        make()(x)


def test_indices_wrong_shape_or_dtype_raise() -> None:
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        make()(codes()[0])
    with pytest.raises(ValueError, match="integer"):
        make()(codes().float())


def test_conditioning_changes_outputs() -> None:
    model = make(num_classes=4)
    x = codes(b=2)
    a = model(x, torch.tensor([0, 1]))
    b = model(x, torch.tensor([2, 1]))
    assert not torch.allclose(a[0], b[0])  # the changed label changes its map's logits
    assert torch.equal(a[1], b[1])  # and only its map's
    # the label reaches the very first position too (there is no code before it)
    assert not torch.allclose(a[0, :, 0, 0], b[0, :, 0, 0])
    # a 0-d label is shared by the whole batch
    assert torch.equal(model(x, torch.tensor(1))[1], a[1])


def test_label_misuse_raises() -> None:
    x = codes(b=2)
    with pytest.raises(ConfigError, match="unconditional"):
        make()(x, torch.tensor([0, 1]))
    cond = make(num_classes=4)
    with pytest.raises(ConfigError, match="required"):
        cond(x)
    with pytest.raises(ConfigError, match="num_classes"):
        cond(x, torch.tensor([0, 4]))
    with pytest.raises(ConfigError, match="num_classes"):
        cond(x, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        cond(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        cond(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ConfigError, match="required"):
        cond.training_losses((x, None))


def test_dropout_is_active_only_in_training() -> None:
    model = make(dropout=0.5)
    x = codes()
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


# ------------------------------------------------------------------ sampling


def test_sample_shape_range_and_determinism() -> None:
    model = make()
    a = model.sample(4, (3, 5), generator=torch.Generator().manual_seed(0))
    b = model.sample(4, (3, 5), generator=torch.Generator().manual_seed(0))
    c = model.sample(4, (3, 5), generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 5) and a.dtype == torch.long
    assert int(a.min()) >= 0 and int(a.max()) < K
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert model.sample(0, (2, 2)).shape == (0, 2, 2)


def test_greedy_sample_is_a_fixed_point_of_the_model() -> None:
    # With temperature 0 each code is the argmax of the logits computed from the codes before it;
    # causality makes those logits equal to a full forward pass over the finished sample.
    model = make(num_classes=3)
    labels = torch.tensor([0, 2])
    s = model.sample(2, (4, 5), labels, temperature=0.0)
    assert torch.equal(model.eval()(s, labels).argmax(1), s)


def test_sample_respects_top_k() -> None:
    model = make()
    s = model.sample(3, (3, 4), top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, model.sample(3, (3, 4), temperature=0.0))


def test_sample_labels() -> None:
    model = make(num_classes=3)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    per_map = model.sample(2, (3, 3), torch.tensor([1, 1]), generator=g())
    shared = model.sample(2, (3, 3), 1, generator=g())
    assert torch.equal(per_map, shared)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model.sample(2, (3, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match="required"):
        model.sample(2, (3, 3))
    with pytest.raises(ConfigError, match="unconditional"):
        make().sample(2, (3, 3), torch.tensor([0, 1]))


def test_sample_restores_the_training_mode() -> None:
    model = make(dropout=0.5)
    model.train()
    model.sample(1, (2, 2))
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    model.sample(1, (2, 2))
    assert not model.training


@pytest.mark.parametrize(
    "args,kwargs",
    [((-1, (2, 2)), {}), ((1, (0, 2)), {}), ((1, (2,)), {}), ((1, (2, 2)), {"top_p": 0.0})],
)
def test_sample_rejects_bad_arguments(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make().sample(*args, **kwargs)


# ------------------------------------------------------------------ persistence


def test_save_and_load_round_trip(tmp_path) -> None:
    model = make(num_classes=2, dropout=0.1).eval()
    x, labels = codes(b=2), torch.tensor([0, 1])
    path = model.save_pretrained(tmp_path / "prior")
    assert json.loads((path / "config.json").read_text())["type"] == "GatedPixelCNN"
    loaded = GatedPixelCNN.from_pretrained(path)
    assert loaded.config == model.config
    assert not loaded.training
    assert torch.equal(loaded(x, labels), model(x, labels))


def test_loading_another_type_fails(tmp_path) -> None:
    other = torch.nn.Linear(2, 2)
    save_module(other, PixelCNNConfig(), tmp_path / "other")
    with pytest.raises(CheckpointError, match="GatedPixelCNN"):
        GatedPixelCNN.from_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError):
        GatedPixelCNN.from_pretrained(tmp_path / "missing")


def test_loading_mismatched_weights_fails(tmp_path) -> None:
    path = make().save_pretrained(tmp_path / "prior")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["channels"] = 8
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        GatedPixelCNN.from_pretrained(path)


# ------------------------------------------------------------------ training


def test_short_training_run_learns_structure() -> None:
    # 200 maps 4x4, K = 8: code t (raster order) = (first + 3 t) mod 8, so everything after the
    # first code is determined by it. The best loss is log(8) / 16 nats per code (only the first
    # code is uncertain); a model that learns nothing stays near log(8).
    torch.manual_seed(0)
    k = 8
    first = torch.randint(0, k, (200,))
    data = (first[:, None] + 3 * torch.arange(16)[None]) % k  # (200, 16)
    data = data.reshape(200, 4, 4)
    model = GatedPixelCNN(PixelCNNConfig(codebook_size=k, channels=32, layers=3, kernel_size=3))
    model.train()
    train_with_adam(model, lambda _: (data[torch.randint(0, 200, (64,))], None), 150, 3e-3)
    model.eval()
    with torch.no_grad():
        final = model.training_losses((data, None))
    # optimum log(8) / 16 = 0.13 nats; chance level log(8) = 2.08
    assert final["loss"].item() < 0.3, final
    # and samples follow the rule
    s = model.sample(8, (4, 4), temperature=0.0)
    assert torch.equal(s.reshape(8, 16), (s[:, 0, :1] + 3 * torch.arange(16)) % k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sampling_and_loading_on_cuda(tmp_path) -> None:
    model = make(num_classes=2)
    path = model.save_pretrained(tmp_path / "prior")
    loaded = GatedPixelCNN.from_pretrained(path, map_location="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    s = loaded.sample(2, (3, 3), torch.tensor([0, 1]), generator=g)
    assert s.device.type == "cuda" and s.shape == (2, 3, 3)
    x, labels = codes(b=2), torch.tensor([0, 1])
    assert torch.allclose(loaded(x.cuda(), labels).cpu(), model.eval()(x, labels), atol=1e-5)
