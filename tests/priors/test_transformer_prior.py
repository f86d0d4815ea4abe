"""Transformer prior: config checks, shapes for maps and sequences, 2D positions, save/load,
and a short training run through the shared training loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vqvae import configs
from vqvae.errors import CheckpointError, ConfigError
from vqvae.priors import TransformerPrior, TransformerPriorConfig
from vqvae.training import ShuffledBatches, TrainConfig, fit

K = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def make(**kw) -> TransformerPrior:
    torch.manual_seed(0)
    cfg = dict(codebook_size=K, dim=16, heads=2, layers=2)
    cfg.update(kw)
    return TransformerPrior(TransformerPriorConfig(**cfg))


@pytest.mark.parametrize(
    "kwargs,option",
    [
        ({"dim": 10, "heads": 4}, "divisible"),
        ({"heads": 0}, "prior.heads"),
        ({"layers": 0}, "prior.layers"),
        ({"dropout": 1.0}, "prior.dropout"),
        ({"label_dropout": 1.0}, "prior.label_dropout"),
        ({"codebook_size": 0}, "prior.codebook_size"),
        ({"num_classes": -1}, "prior.num_classes"),
        ({"max_rows": 0}, "prior.max_rows"),
        ({"layout": "3d"}, "layout"),
        ({"label_everywhere": "yes"}, "prior.label_everywhere"),
    ],
)
def test_invalid_config_raises_config_error(kwargs: dict, option: str) -> None:
    with pytest.raises(ConfigError, match=option.replace(".", r"\.")):
        TransformerPriorConfig(**kwargs)


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    cfg = TransformerPriorConfig(codebook_size=9, dim=32, heads=4, num_classes=3, layout="1d")
    assert configs.from_dict(TransformerPriorConfig, configs.to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        configs.from_dict(TransformerPriorConfig, {"width": 3})


def test_label_everywhere_adds_one_embedding_and_only_for_conditional_priors() -> None:
    base = set(make(num_classes=3).state_dict())
    assert set(make(num_classes=3, label_everywhere=True).state_dict()) == base | {"label.weight"}
    assert make(label_everywhere=True).label is None  # unconditional: nothing to add
    # With the class at every position, the label changes the logits at every position even
    # when the start token's embedding is the same for both classes.
    model = make(num_classes=2, label_everywhere=True, layout="1d").eval()
    with torch.no_grad():
        model.start.weight[1] = model.start.weight[0]
        codes = torch.randint(0, K, (1, 6))
        a = model(codes, torch.tensor([0]))
        b = model(codes, torch.tensor([1]))
    assert (a - b).abs().amax(1).min() > 0  # logits (B, K, T): every position differs


def test_forward_shapes_for_maps_and_sequences() -> None:
    x = torch.randint(0, K, (3, 4, 5))
    logits = make()(x)
    assert logits.shape == (3, K, 4, 5)
    loss = make().training_losses((x, None))
    assert loss["loss"].requires_grad
    assert math.isclose(
        loss["bits_per_code"].item(),
        torch.nn.functional.cross_entropy(logits, x).item() / math.log(2),
        rel_tol=1e-5,
    )
    seq = make(layout="1d")
    assert seq(torch.randint(0, K, (2, 11))).shape == (2, K, 11)
    assert seq.sample(2, (11,)).shape == (2, 11)


def test_grid_and_input_errors() -> None:
    with pytest.raises(ConfigError, match="max_rows"):
        make(max_rows=3)(torch.zeros(1, 4, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="max_length"):
        make(layout="1d", max_length=5)(torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        make()(torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        make(layout="1d")(torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="codebook_size"):
        make()(torch.full((1, 2, 2), K))
    with pytest.raises(ValueError, match="integer"):
        make()(torch.zeros(1, 2, 2))


def test_positions_know_the_2d_layout() -> None:
    # Same raster index, different (row, col): a 2×6 and a 3×4 map differ at position 5
    # ((0, 5) vs (1, 1)), so a model with row/column embeddings gives different logits there.
    model = make().eval()
    codes = torch.randint(0, K, (1, 12), generator=torch.Generator().manual_seed(0))
    a = model(codes.reshape(1, 2, 6)).reshape(1, K, 12)
    b = model(codes.reshape(1, 3, 4)).reshape(1, K, 12)
    assert torch.allclose(a[..., :4], b[..., :4])  # (0, 0..3) in both layouts
    assert not torch.allclose(a[..., 5], b[..., 5])


def test_save_and_load_round_trip(tmp_path) -> None:
    model = make(num_classes=3, label_dropout=0.1).eval()
    path = model.save_pretrained(tmp_path / "prior")
    assert json.loads((path / "config.json").read_text())["type"] == "TransformerPrior"
    loaded = TransformerPrior.from_pretrained(path)
    x, labels = torch.randint(0, K, (2, 3, 3)), torch.tensor([0, 2])
    assert loaded.config == model.config and not loaded.training
    assert torch.equal(loaded(x, labels), model(x, labels))
    with pytest.raises(CheckpointError, match="TransformerPrior"):
        from vqvae.priors import GatedPixelCNN

        GatedPixelCNN.from_pretrained(path)


def test_short_training_run_with_the_shared_loop_learns_structure(tmp_path) -> None:
    # Maps 4×4, code t = (first + 3 t) mod 8 in raster order: only the first code is random,
    # so the optimum is log(8) / 16 = 0.13 nats per code; chance is log(8) = 2.08.
    torch.manual_seed(0)
    first = torch.randint(0, K, (256,))
    data = ((first[:, None] + 3 * torch.arange(16)[None]) % K).reshape(256, 4, 4)
    model = make(dim=32, heads=2, layers=2)
    batches = ShuffledBatches((data, None), 64, seed=0)
    cfg = TrainConfig(steps=150, batch_size=64, lr=3e-3, warmup_steps=10, log_every=50)
    fit(model, batches, cfg, show_progress=False)
    model.eval()
    with torch.no_grad():
        assert model.training_losses((data, None))["loss"].item() < 0.3
    s = model.sample(8, (4, 4), temperature=0.0)
    assert torch.equal(s.reshape(8, 16), (s[:, 0, :1] + 3 * torch.arange(16)) % K)
