"""The bad-input corpus: malformed data, hostile files and invalid options, each run through the
command line. Every case must end with exit code 2, exactly one line on stderr that names the
file or option at fault, no traceback, and a run folder that was either never created or is
byte-for-byte unchanged.

Each case is one function below; its docstring says what it feeds in. ``CASES`` collects them,
and ``test_corpus_is_large_and_distinct`` keeps the count honest.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_fixtures import batch, py2_pickle, write_archive, write_cifar10
from helpers import tiny_image_model, write_bar_images
from PIL import Image
from safetensors.torch import save_file

from vqvae.cli.main import main
from vqvae.data import save_codes
from vqvae.data.idx import encode_idx

TINY = [
    *tiny_image_model(codebook_size=8),
    "train.batch_size=8",
    "train.checkpoint_every=2",
    "prior.channels=8",
    "prior.layers=2",
    "prior.kernel_size=3",
    "prior_train.batch_size=8",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run with a conditional prior (3 classes), and its data spec."""
    root = tmp_path_factory.mktemp("trained")
    spec, run = write_bar_images(root, 40), root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a shared machine
    assert main(["train", "--data", spec, "--out", str(run), "--steps", "4", *TINY]) == 0
    assert main(["train-prior", str(run), "--steps", "2"]) == 0
    yield run, spec
    torch.set_num_threads(threads)


class Ctx:
    """What a case builds its input with. ``new_run`` must not exist afterwards; ``run`` (a
    fresh copy of the trained run) must be unchanged byte for byte."""

    def __init__(self, tmp: Path, trained: tuple[Path, str]) -> None:
        self.tmp = tmp
        self._trained_run, self.spec = trained
        self.new_run = tmp / "new-run"
        self.run: Path | None = None

    def train(self, spec: str, *extra: str, steps: str = "2") -> list[str]:
        out = ["--out", str(self.new_run)]
        return ["train", "--data", spec, *out, "--steps", steps, *TINY, *extra]

    def copy_run(self) -> Path:
        self.run = self.tmp / "run"
        shutil.copytree(self._trained_run, self.run)
        return self.run

    def resume(self, *extra: str) -> list[str]:
        return ["train", "--data", self.spec, "--out", str(self.run), "--resume", *extra]

    def checkpoint(self) -> Path:
        ckpt = self.run / "checkpoints"
        return ckpt / (ckpt / "latest").read_text().strip()

    # --- data builders ---------------------------------------------------------------------
    def idx(self, **broken: Callable[[bytes], bytes]) -> str:
        """A valid gzipped MNIST-layout folder; ``broken[stem](raw IDX bytes) -> file bytes``."""
        d = self.tmp / "mnist"
        d.mkdir()
        rng = np.random.default_rng(0)
        arrays = {
            "train_images": rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, 6, dtype=np.uint8),
            "test_images": rng.integers(0, 256, (4, 8, 8), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, 4, dtype=np.uint8),
        }
        names = {
            "train_images": "train-images-idx3-ubyte.gz",
            "train_labels": "train-labels-idx1-ubyte.gz",
            "test_images": "t10k-images-idx3-ubyte.gz",
            "test_labels": "t10k-labels-idx1-ubyte.gz",
        }
        for stem, array in arrays.items():
            raw = encode_idx(array)
            data = broken[stem](raw) if stem in broken else gzip.compress(raw)
            if data is not None:
                (d / names[stem]).write_bytes(data)
        return f"mnist:{d}"

    def npz(self, **arrays) -> str:
        np.savez(self.tmp / "data.npz", **arrays)
        return f"npz:{self.tmp / 'data.npz'}"

    def folder(self, files: dict[str, bytes | Image.Image]) -> str:
        d = self.tmp / "images"
        d.mkdir()
        for name, content in files.items():
            path = d / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Image.Image):
                content.save(path)
            else:
                path.write_bytes(content)
        return f"folder:{d}"

    def cifar(self) -> Path:
        return write_cifar10(self.tmp / "cifar", n=2)

    def config_file(self, name: str, text: str) -> str:
        (self.tmp / name).write_text(text)
        return str(self.tmp / name)


def png_bytes(size=(8, 8), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format="PNG")
    return buf.getvalue()


def grey_images(n: int = 10, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)


@dataclass
class Case:
    name: str
    what: str
    build: Callable[[Ctx], tuple[list[str], str]]  # -> (argv, text the message must contain)


CASES: list[Case] = []


def case(fn: Callable[[Ctx], tuple[list[str], str]]):
    CASES.append(Case(fn.__name__.replace("_", "-"), (fn.__doc__ or "").strip(), fn))
    return fn


# --- IDX (MNIST layout) ------------------------------------------------------------------------
@case
def idx_truncated_payload(t):
    """IDX images file (gzip) whose pixel data stops short of what the header declares."""
    return t.train(t.idx(train_images=lambda r: gzip.compress(r[:-7]))), "truncated"


@case
def idx_garbled_gzip(t):
    """A .gz IDX file that is random bytes."""
    noise = np.random.default_rng(1).bytes(300)
    return t.train(
        t.idx(test_images=lambda r: noise)
    ), "t10k-images-idx3-ubyte.gz: not a valid gzip"


@case
def idx_truncated_gzip(t):
    """A gzip stream cut in half (a download interrupted)."""
    cut = lambda r: gzip.compress(r)[: len(gzip.compress(r)) // 2]  # noqa: E731
    return t.train(t.idx(train_labels=cut)), "train-labels-idx1-ubyte.gz: not a valid gzip"


@case
def idx_wrong_magic(t):
    """The images file holds a labels-file magic number."""
    swap = lambda r: gzip.compress(encode_idx(np.zeros(6, np.uint8)))  # noqa: E731
    return t.train(t.idx(train_images=swap)), "bad magic number"


@case
def idx_uncompressed_header_cut(t):
    """An uncompressed IDX file (no .gz) whose header stops after 6 bytes."""
    spec = t.idx(test_images=lambda r: None)
    raw = encode_idx(np.zeros((4, 8, 8), np.uint8))
    (t.tmp / "mnist" / "t10k-images-idx3-ubyte").write_bytes(raw[:6])
    return t.train(spec), "t10k-images-idx3-ubyte: truncated IDX header"


@case
def idx_trailing_bytes(t):
    """An IDX labels file with bytes after the declared payload."""
    return t.train(t.idx(test_labels=lambda r: gzip.compress(r + b"xx"))), "trailing bytes"


@case
def idx_label_count_mismatch(t):
    """Seven labels for six training images."""
    more = lambda r: gzip.compress(encode_idx(np.zeros(7, np.uint8)))  # noqa: E731
    return t.train(t.idx(train_labels=more)), "7 labels for the 6 images"


@case
def idx_label_out_of_range(t):
    """A label 12 in a ten-class dataset."""
    bad = lambda r: gzip.compress(encode_idx(np.full(4, 12, np.uint8)))  # noqa: E731
    return t.train(t.idx(test_labels=bad)), "label 12 out of range"


@case
def idx_missing_file(t):
    """One of the four IDX files is absent."""
    return t.train(t.idx(test_images=lambda r: None)), "t10k-images-idx3-ubyte.gz: missing"


# --- image folders -------------------------------------------------------------------------------
@case
def folder_truncated_png(t):
    """A PNG cut in half among good ones."""
    files = {f"{i}.png": png_bytes() for i in range(4)}
    files["2.png"] = files["2.png"][:40]
    return t.train(t.folder(files)), "2.png: not a readable image"


@case
def folder_text_named_png(t):
    """A text file with a .png name."""
    files = {f"{i}.png": png_bytes() for i in range(3)} | {"notes.png": b"just some text\n"}
    return t.train(t.folder(files)), "notes.png: not a readable image"


@case
def folder_empty_jpeg(t):
    """A zero-byte .jpg."""
    files = {f"{i}.png": png_bytes() for i in range(3)} | {"empty.jpg": b""}
    return t.train(t.folder(files)), "empty.jpg: not a readable image"


@case
def folder_without_images(t):
    """A folder with no image files at all (an empty dataset)."""
    return t.train(t.folder({"readme.txt": b"no images here"})), "no image files"


@case
def folder_loose_images_beside_classes(t):
    """Class sub-folders plus an image with no class."""
    files = {"a/0.png": png_bytes(), "b/1.png": png_bytes(), "stray.png": png_bytes()}
    return t.train(t.folder(files)), "loose images"


@case
def folder_train_without_test(t):
    """A train/ folder but no test/ folder."""
    return t.train(t.folder({"train/0.png": png_bytes(), "train/1.png": png_bytes()})), "test/"


# --- NumPy arrays --------------------------------------------------------------------------------
@case
def npz_nan(t):
    """Float images containing NaN."""
    x = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    x[3, 2, 1] = np.nan
    return t.train(t.npz(images=x)), "non-finite pixel values"


@case
def npz_inf(t):
    """Float images containing +inf."""
    x = np.random.default_rng(0).random((10, 8, 8))
    x[0, 0, 0] = np.inf
    return t.train(t.npz(images=x)), "non-finite pixel values"


@case
def npz_floats_out_of_range(t):
    """Float images in [0, 255] instead of [0, 1]."""
    return t.train(t.npz(images=grey_images().astype(np.float32))), "expected [0, 1]"


@case
def npz_no_images(t):
    """An image array with zero images."""
    return t.train(t.npz(x_train=np.zeros((0, 8, 8), np.uint8), x_test=grey_images(2))), "empty"


@case
def npz_single_image(t):
    """One image: too few to split into train and test."""
    return t.train(t.npz(images=grey_images(1))), "too few"


@case
def npz_object_array(t):
    """An .npz whose array is pickled Python objects."""
    x = np.empty(2, dtype=object)
    x[:] = [{"a": 1}, {"b": 2}]
    return t.train(t.npz(images=x)), "pickled"


@case
def npy_that_is_a_pickle(t):
    """A .npy path holding a raw pickle (which np.load would unpickle)."""
    (t.tmp / "x.npy").write_bytes(pickle.dumps(grey_images()))
    return t.train(f"npy:{t.tmp / 'x.npy'}"), "not a .npy or .npz file"


@case
def npz_truncated(t):
    """An .npz zip cut short."""
    spec = t.npz(images=grey_images(50))
    path = t.tmp / "data.npz"
    path.write_bytes(path.read_bytes()[:-200])
    return t.train(spec), "data.npz: not a readable .npy/.npz file"


@case
def npz_wrong_keys(t):
    """An .npz with none of the expected array names."""
    return t.train(t.npz(pixels=grey_images())), "found: pixels"


@case
def npz_label_count_mismatch(t):
    """Nine labels for ten images."""
    return t.train(t.npz(images=grey_images(), labels=np.zeros(9, np.int64))), "9 labels for 10"


@case
def npz_negative_label(t):
    """A label of -1."""
    return t.train(t.npz(images=grey_images(), labels=-np.ones(10, np.int64))), "negative label"


@case
def npz_mixed_sizes(t):
    """Train images 8×8, test images 10×10."""
    return t.train(t.npz(x_train=grey_images(), x_test=grey_images(3, 10))), "x_test images"


@case
def npz_mixed_modes(t):
    """Grey train images, RGB test images."""
    rgb = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    return t.train(t.npz(x_train=grey_images(), x_test=rgb)), "x_test images are (3, 8, 8)"


@case
def npz_five_dimensional(t):
    """A 5-D image array."""
    return t.train(t.npz(images=np.zeros((4, 2, 8, 8, 3), np.uint8))), "expected (N, H, W)"


# --- CIFAR batches -------------------------------------------------------------------------------
class _System:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned > pwned.txt",)


@case
def cifar_pickle_runs_a_command(t):
    """A CIFAR batch whose pickle calls os.system when loaded."""
    d = t.cifar()
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": _System(), b"labels": [0]}))
    return t.train(
        f"cifar:{d}"
    ), "data_batch_3]: unsafe or malformed pickle (refusing to load posix"


@case
def cifar_truncated_pickle(t):
    """A CIFAR batch file cut short."""
    d = t.cifar()
    (d / "test_batch").write_bytes((d / "test_batch").read_bytes()[:500])
    return t.train(
        f"cifar:{d}"
    ), "test_batch]: unsafe or malformed pickle (pickle data was truncated)"


@case
def cifar_wrong_row_size(t):
    """CIFAR rows of 100 values instead of 3072."""
    d = t.cifar()
    b = batch(2, 0)
    b[b"data"] = np.zeros((2, 100), np.uint8)
    (d / "data_batch_1").write_bytes(py2_pickle(b))
    return t.train(f"cifar:{d}"), "rows have 100 values"


@case
def cifar_missing_batch(t):
    """A CIFAR-10 folder without data_batch_4."""
    d = t.cifar()
    (d / "data_batch_4").unlink()
    return t.train(f"cifar:{d}"), "missing CIFAR batch file(s) data_batch_4"


@case
def cifar_archive_path_traversal(t):
    """A CIFAR archive with a member '../../escaped'."""
    archive = write_archive(t.tmp / "c.tar.gz", {"../../escaped": b"x"})
    return t.train(f"cifar:{archive}"), "refusing member '../../escaped'"


@case
def cifar_archive_garbled(t):
    """A .tar.gz that is random bytes."""
    (t.tmp / "c.tar.gz").write_bytes(np.random.default_rng(2).bytes(1000))
    return t.train(f"cifar:{t.tmp / 'c.tar.gz'}"), "not a readable tar archive"


# --- options and config files --------------------------------------------------------------------
@case
def option_codebook_of_one(t):
    """K = 1 codes."""
    return t.train(t.spec, "model.quantizer.codebook_size=1"), "codebook_size"


@case
def option_negative_beta(t):
    """β < 0."""
    return t.train(t.spec, "model.quantizer.beta=-0.5"), "beta"


@case
def option_size_not_divisible(t):
    """Image size 10 with a downsampling factor of 4."""
    return t.train(t.spec, "model.image_size=10", "model.downsample=4"), "not divisible"


@case
def option_unknown_key(t):
    """A misspelt setting."""
    return t.train(t.spec, "model.quantiser.dim=4"), "unknown key(s) quantiser"


@case
def option_wrong_type(t):
    """A word where a number belongs."""
    return t.train(t.spec, "train.lr=fast"), "train.lr"


@case
def option_zero_steps(t):
    """--steps 0."""
    return t.train(t.spec, steps="0"), "--steps must be >= 1"


@case
def option_unknown_data_spec(t):
    """A data spec of an unknown kind."""
    return t.train("imagenet:/data"), "unknown data spec"


@case
def config_file_unknown_key(t):
    """A TOML config with a key that does not exist."""
    path = t.config_file("c.toml", "[train]\nlearning_rate = 0.1\n")
    return t.train(t.spec, f"--config={path}"), "c.toml.train: unknown key(s) learning_rate"


@case
def config_file_garbled(t):
    """A TOML config that does not parse."""
    path = t.config_file("c.toml", "[train\nsteps = = 3\n")
    return t.train(t.spec, f"--config={path}"), "c.toml: cannot parse"


@case
def config_file_not_a_mapping(t):
    """A JSON config that is a list."""
    path = t.config_file("c.json", "[1, 2, 3]")
    return t.train(t.spec, f"--config={path}"), "c.json: expected a mapping"


@case
def config_file_wrong_type(t):
    """A YAML config with a list where a number belongs."""
    path = t.config_file("c.yaml", "model:\n  quantizer:\n    beta: [1, 2]\n")
    return t.train(t.spec, f"--config={path}"), "quantizer.beta"


# --- checkpoints, model folders, codes (on a copy of a trained run) ------------------------------
@case
def resume_garbled_checkpoint_weights(t):
    """--resume when the checkpoint's model.safetensors is random bytes."""
    t.copy_run()
    weights = t.checkpoint() / "model" / "model.safetensors"
    weights.write_bytes(np.random.default_rng(3).bytes(weights.stat().st_size))
    return t.resume(), "model.safetensors: not a valid safetensors file"


@case
def resume_pickled_checkpoint(t):
    """--resume when the checkpoint's weights are a torch.save pickle named .safetensors."""
    t.copy_run()
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buf)
    (t.checkpoint() / "model" / "model.safetensors").write_bytes(buf.getvalue())
    return t.resume(), "not a valid safetensors file"


@case
def resume_checkpoint_of_another_shape(t):
    """--resume when the checkpoint holds a codebook of another size (another architecture)."""
    t.copy_run()
    weights = t.checkpoint() / "model" / "model.safetensors"
    from safetensors.torch import load_file

    state = load_file(weights)
    state["quantizer.codebook"] = torch.zeros(16, 4)
    save_file(state, str(weights))
    return t.resume(), "quantizer.codebook has shape (16, 4)"


@case
def resume_checkpoint_missing_tensor(t):
    """--resume when a weight is missing from the checkpoint."""
    t.copy_run()
    weights = t.checkpoint() / "model" / "model.safetensors"
    from safetensors.torch import load_file

    state = load_file(weights)
    state.pop(sorted(state)[0])
    save_file(state, str(weights))
    return t.resume(), "do not match the architecture"


@case
def resume_garbled_trainer_state(t):
    """--resume when trainer.json is not JSON."""
    t.copy_run()
    (t.checkpoint() / "trainer.json").write_text("{not json")
    return t.resume(), "trainer.json: unreadable checkpoint state"


@case
def resume_latest_names_nothing(t):
    """--resume when checkpoints/latest names a checkpoint that does not exist."""
    t.copy_run()
    (t.run / "checkpoints" / "latest").write_text("step-99999999\n")
    return t.resume(), "latest: names 'step-99999999'"


@case
def resume_changes_the_model(t):
    """--resume with a different model setting."""
    t.copy_run()
    return t.resume("model.hidden=16"), "cannot change model.hidden"


@case
def resume_on_other_data(t):
    """train --resume with --data other than the run's (without --allow-other-data)."""
    t.copy_run()
    other = write_bar_images(t.tmp, 40)
    argv = ["train", "--data", other, "--out", str(t.run), "--resume", "--steps", "6"]
    return argv, f"was trained on {t.spec!r}, not {other!r}"


@case
def prior_resume_on_other_data(t):
    """train-prior --resume with --data other than the run's (without --allow-other-data)."""
    t.copy_run()
    other = write_bar_images(t.tmp, 40)
    return ["train-prior", str(t.run), "--data", other, "--resume"], "--allow-other-data"


@case
def model_too_large_for_memory(t):
    """A codebook of 10^12 codes: refused with its size before anything is built."""
    return t.train(t.spec, "model.quantizer.codebook_size=1000000000000"), "needs about"


@case
def run_config_garbled(t):
    """evaluate on a run whose config.json is not JSON."""
    t.copy_run()
    (t.run / "config.json").write_text("{{{")
    return ["evaluate", str(t.run)], "config.json: unreadable run config"


@case
def model_folder_of_another_type(t):
    """A model folder whose config.json says it holds a prior."""
    t.copy_run()
    meta = json.loads((t.run / "model" / "config.json").read_text())
    meta["type"] = "GatedPixelCNN"
    (t.run / "model" / "config.json").write_text(json.dumps(meta))
    return ["evaluate", str(t.run)], "model: holds a 'GatedPixelCNN'"


@case
def model_weights_truncated(t):
    """A model.safetensors cut short."""
    t.copy_run()
    weights = t.run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return ["reconstruct", str(t.run), "--out", str(t.run / "r.png")], "model.safetensors"


@case
def decode_indices_out_of_range(t):
    """decode with indices up to 40 for a codebook of 8 codes."""
    t.copy_run()
    save_codes(t.tmp / "c.safetensors", np.full((2, 4, 4), 40), None, 64)
    argv = ["decode", str(t.run), "--codes", str(t.tmp / "c.safetensors")]
    return [*argv, "--out", str(t.run / "d.png")], "index 40 is out of range"


@case
def decode_wrong_grid(t):
    """decode with 3×3 index maps for a model with 4×4 maps."""
    t.copy_run()
    save_codes(t.tmp / "c.safetensors", np.zeros((2, 3, 3), np.int64), None, 8)
    argv = ["decode", str(t.run), "--codes", str(t.tmp / "c.safetensors")]
    return [*argv, "--out", str(t.run / "d.png")], "index maps of shape (3, 3)"


@case
def decode_garbled_codes(t):
    """decode with a codes file that is random bytes."""
    t.copy_run()
    (t.tmp / "c.safetensors").write_bytes(np.random.default_rng(4).bytes(500))
    argv = ["decode", str(t.run), "--codes", str(t.tmp / "c.safetensors")]
    return [*argv, "--out", str(t.run / "d.png")], "c.safetensors: not a readable codes"


@case
def sample_label_out_of_range(t):
    """sample --label 7 from a prior conditioned on 3 classes."""
    t.copy_run()
    return ["sample", str(t.run), "--label", "7", "--out", str(t.run / "s.png")], "--label"


# --- the corpus itself ---------------------------------------------------------------------------
def _snapshot(path: Path | None) -> dict[str, bytes] | None:
    if path is None or not path.exists():
        return None
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    c, trained, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # where a hostile pickle's command would write
    t = Ctx(tmp_path, trained)
    argv, needle = c.build(t)
    before = _snapshot(t.run)
    capsys.readouterr()
    assert main(argv) == 2, c.what
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vqvae {argv[0]}: error: ") and needle in lines[0], lines[0]
    assert not t.new_run.exists(), "a run folder was created"
    assert _snapshot(t.run) == before, "the run folder changed"
    assert not (tmp_path / "pwned.txt").exists()


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)
    assert all(c.what for c in CASES)


@pytest.mark.parametrize("name", ["cifar-pickle-runs-a-command", "resume-pickled-checkpoint"])
def test_no_traceback_from_a_fresh_process(name, trained, tmp_path):
    """The same one-line error from ``python -m vqvae.cli.main``, as a user sees it."""
    (c,) = [c for c in CASES if c.name == name]
    argv, needle = c.build(Ctx(tmp_path, trained))
    result = subprocess.run(
        [sys.executable, "-m", "vqvae.cli.main", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr
    assert not (tmp_path / "pwned.txt").exists()
