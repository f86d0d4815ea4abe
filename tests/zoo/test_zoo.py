"""Shipped models by name (``vqvae.zoo``): packaging a run, checksums verified on every load
(a changed, missing or unlisted file is refused, naming it), loading by name in the library and
with ``--pretrained`` on the command line; the models shipped in the package reproduce their
cards' test metrics and fit the size budget."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_image_model

import vqvae
from vqvae import zoo
from vqvae.cli.main import main
from vqvae.errors import CheckpointError, ConfigError
from vqvae.pipeline.run import RunDir
from vqvae.zoo.package import package

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TINY = [
    *tiny_image_model(codebook_size=16),
    "train.batch_size=32",
    "prior.channels=8",
    "prior.layers=2",
    "prior.kernel_size=3",
    "prior_train.batch_size=32",
]


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """A zoo folder holding one packaged model, "tiny": a VQ-VAE + prior on the digits."""
    root = tmp_path_factory.mktemp("zoo")
    run = root.parent / "tiny-run"
    assert main(["train", "--data", "digits", "--out", str(run), "--steps", "30", *TINY]) == 0
    assert main(["train-prior", str(run), "--steps", "10", *TINY[-4:]]) == 0
    package(run, "tiny", description="tiny digits model", commands=["vqvae train ..."], root=root)
    return root


@pytest.fixture
def shipped_tiny(tiny_zoo, monkeypatch):
    """The tiny zoo as the package's own (``zoo.ZOO``)."""
    monkeypatch.setattr(zoo, "ZOO", tiny_zoo)
    return tiny_zoo


def test_package_writes_card_with_checksums_and_metrics(tiny_zoo):
    path = tiny_zoo / "tiny"
    card = zoo.verify(path)
    assert set(card["files"]) == {
        "config.json",
        "model/config.json",
        "model/model.safetensors",
        "prior/model/config.json",
        "prior/model/model.safetensors",
    }
    for key in ("psnr", "codebook_usage", "prior_nll_bits_per_code"):
        assert key in card["metrics"] and key in card["metrics_fp32_weights"]
        assert key in card["tolerances"]
    assert card["commands"] == ["vqvae train ..."] and card["data"]["spec"] == "digits"
    assert "tiny digits model" in (path / "README.md").read_text()
    assert not list(tiny_zoo.glob(".*"))  # no temporary folder left


def test_stored_weights_are_half_except_the_quantizer(tiny_zoo):
    from safetensors.torch import load_file

    state = load_file(str(tiny_zoo / "tiny" / "model" / "model.safetensors"))
    assert state["quantizer.codebook"].dtype.itemsize == 4
    assert all(
        v.dtype.itemsize == 2
        for k, v in state.items()
        if "quantizer" not in k and v.is_floating_point()
    )
    loaded = zoo.load_folder(tiny_zoo / "tiny")
    assert all(p.dtype.itemsize == 4 for p in loaded.model.parameters())


@pytest.mark.parametrize("damage", ["flip", "missing", "unlisted"])
def test_checksums_refuse_a_damaged_model_naming_the_file(tiny_zoo, tmp_path, damage):
    path = tmp_path / "tiny"
    shutil.copytree(tiny_zoo / "tiny", path)
    weights = path / "model" / "model.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-3] ^= 1  # one bit of a weight: still a valid safetensors file
        weights.write_bytes(bytes(data))
        match = "model.safetensors: checksum mismatch"
    elif damage == "missing":
        weights.unlink()
        match = "model.safetensors: missing"
    else:
        (path / "prior" / "extra.safetensors").write_bytes(b"")
        match = "extra.safetensors: not listed"
    with pytest.raises(CheckpointError, match=match):
        zoo.pretrained("tiny", root=tmp_path)


def test_pretrained_by_name_in_the_library(shipped_tiny):
    model = vqvae.pretrained("tiny")
    assert model.card["name"] == "tiny" and model.priors
    images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    codes = model.encode(images)
    assert codes.shape == (3, 4, 4) and codes.max() < 16
    assert model.decode(codes).shape == (3, 1, 8, 8)
    samples = model.sample(4, label=2, seed=1)
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert np.array_equal(samples, model.sample(4, label=2, seed=1))
    # the card's metrics, reproduced by a fresh load (the digits ship with scikit-learn)
    measured = zoo.measure(model)
    for key, tolerance in model.card["tolerances"].items():
        assert abs(measured[key] - model.card["metrics"][key]) <= tolerance, key


def test_unknown_name_lists_the_shipped(shipped_tiny, capsys):
    with pytest.raises(ConfigError, match=r"no such shipped model \(shipped: tiny\)"):
        vqvae.pretrained("cifar10")
    assert main(["sample", "--pretrained", "nope", "--out", "x.png"]) == 2
    assert "shipped: tiny" in capsys.readouterr().err


def test_cli_pretrained_lists_and_commands_take_pretrained(shipped_tiny, tmp_path, capsys):
    assert main(["pretrained"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("tiny") and "psnr" in listing and "tiny digits model" in listing
    out = tmp_path / "s.png"
    assert (
        main(["sample", "--pretrained", "tiny", "--n", "2", "--label", "1", "--out", str(out)]) == 0
    )
    assert out.is_file()
    rec = tmp_path / "r.png"
    assert main(["reconstruct", "--pretrained", "tiny", "--n", "4", "--out", str(rec)]) == 0
    codes = tmp_path / "c.safetensors"
    assert main(["encode", "--pretrained", "tiny", "--split", "test", "--out", str(codes)]) == 0
    assert codes.is_file()
    # nothing was written into the shipped folder
    zoo.verify(shipped_tiny / "tiny")
    assert not (shipped_tiny / "tiny" / "codes").exists()
    capsys.readouterr()
    assert main(["sample", str(tmp_path), "--pretrained", "tiny", "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["sample", "--out", str(out)]) == 2
    assert "RUN folder or --pretrained" in capsys.readouterr().err


def test_compress_and_decompress_take_pretrained(shipped_tiny, tmp_path, capsys):
    archive, out = tmp_path / "digits.vqz", tmp_path / "back"
    assert main(["compress", "--pretrained", "tiny", "digits", "--out", str(archive)]) == 0
    assert main(["decompress", str(archive), "--pretrained", "tiny", "--out", str(out)]) == 0
    report = json.loads((tmp_path / "digits.vqz.json").read_text())
    assert len(list(out.glob("*.png"))) == report["items"] > 0
    run = shipped_tiny / "tiny"  # the same model named by its folder decodes it identically
    again = tmp_path / "again"
    assert main(["decompress", str(archive), "--run", str(run), "--out", str(again)]) == 0
    for png in out.glob("*.png"):
        assert (again / png.name).read_bytes() == png.read_bytes()
    capsys.readouterr()
    assert main(["compress", "--pretrained", "tiny", "--out", str(archive)]) == 2
    assert "--pretrained NAME INPUT" in capsys.readouterr().err


def test_packaging_a_run_without_a_prior_is_one_line_exit_2(tmp_path, capsys):
    from vqvae.zoo.package import main as package_main

    run = tmp_path / "no-prior"
    assert main(["train", "--data", "digits", "--out", str(run), "--steps", "2", *TINY]) == 0
    capsys.readouterr()
    argv = [str(run), "--name", "x", "--description", "d", "--command", "c"]
    assert package_main([*argv, "--root", str(tmp_path / "zoo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no trained prior" in err
    assert not (tmp_path / "zoo").exists()


# --- the models shipped in this package ----------------------------------------------------
SHIPPED = zoo.names()


def test_shipped_models_fit_the_budget_and_verify():
    assert zoo.total_bytes() <= zoo.BUDGET_BYTES
    for name in SHIPPED:
        card = zoo.verify(zoo.ZOO / name)
        assert card["name"] == name and card["commands"] and card["metrics"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_reproduces_its_card(name):
    """``vqvae.pretrained(name)`` on the card's test split gives the card's metrics."""
    card = zoo.read_card(zoo.ZOO / name)
    scheme, _, where = card["data"]["spec"].partition(":")
    local = SHARED_DATA / where.partition("shared/data/")[2] if where else None
    if local is not None and not local.is_dir():
        pytest.skip(f"{name}: its test split ({local}) is not on this machine")
    model = vqvae.pretrained(name)
    measured = zoo.measure(model, f"{scheme}:{local}" if local else None)
    for key, tolerance in card["tolerances"].items():
        assert abs(measured[key] - card["metrics"][key]) <= tolerance, (key, measured[key])


def test_shipped_runs_are_plain_run_folders():
    for name in SHIPPED:
        config, spec = RunDir(zoo.ZOO / name).read_config()
        card = json.loads((zoo.ZOO / name / "card.json").read_text())
        assert config.model.kind == card["model_kind"] and spec == card["data"]["spec"]
