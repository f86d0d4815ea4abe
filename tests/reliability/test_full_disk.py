"""A write the disk refuses (full, over quota, read-only) at any file the package writes: one line
naming the file, exit 2, no partial or temporary file, and the last complete checkpoint kept.

The disk is made full on purpose: the low-level write (safetensors' ``save_file``, ``os.fsync``,
a log file's ``write``) raises ``OSError(ENOSPC)`` after writing part of its file, as a full
disk does."""

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_image_model, tiny_vqvae, write_bar_images
from safetensors import SafetensorError

from vqvae import files, serialization
from vqvae.cli.main import main
from vqvae.data import load_codes, save_codes
from vqvae.errors import WriteError
from vqvae.pipeline import plots
from vqvae.training import checkpoint
from vqvae.training.checkpoint import latest_checkpoint, verify_checkpoint
from vqvae.training.logger import MetricsLog

TINY = [
    *tiny_image_model(codebook_size=8),
    "train.batch_size=16",
    "train.checkpoint_every=2",
    "train.log_every=1",
]
FULL = "no space left on device"


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return write_bar_images(tmp_path_factory.mktemp("data"), 40)


def _train(spec: str, run: Path, steps: int = 6, *extra: str) -> int:
    return main(["train", "--data", spec, "--out", str(run), "--steps", str(steps), *TINY, *extra])


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _fail_on(monkeypatch, module, name: str, run: Path, when) -> dict:
    """Make ``module.name(tensors, path)`` write half its file and raise ENOSPC when
    ``when(path)``; returns what the run's checkpoints held at that moment."""
    real = getattr(module, name)
    seen: dict = {}

    def save(tensors, path, *args, **kwargs):
        if when(Path(path)):
            writing = Path(path).relative_to(run).parts[:2]  # ("checkpoints", "step-…")
            seen["checkpoints"] = {  # the complete checkpoints, not the one being written
                k: v
                for k, v in _files(run / "checkpoints").items()
                if ("checkpoints", k.split("/")[0]) != writing
            }
            Path(path).write_bytes(b"\0" * 100)  # the part that fitted
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(module, name, save)
    return seen


def _assert_clean_failure(capsys, run: Path, path: str, latest: str) -> None:
    err = capsys.readouterr().err.split("\r")[-1].strip()  # after the progress bar
    assert err == f"vqvae train: error: {run}/{path}: {FULL}", err
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], "a temporary file is left"
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None and ckpt.name == latest
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [latest]
    verify_checkpoint(ckpt, tiny_vqvae(codebook_size=8))  # complete and loadable


def test_full_disk_at_a_checkpoint_keeps_the_previous_one(spec, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    at_step_4 = "checkpoints/step-00000004/model/model.safetensors"
    seen = _fail_on(
        monkeypatch, serialization, "save_file", run, lambda p: "step-00000004" in str(p)
    )
    assert _train(spec, run) == 2
    _assert_clean_failure(capsys, run, at_step_4, "step-00000002")
    assert _files(run / "checkpoints") == seen["checkpoints"]  # untouched, byte for byte
    assert not (run / "checkpoints" / "step-00000004").exists()  # no half checkpoint


def test_full_disk_at_the_optimizer_state(spec, tmp_path, capsys, monkeypatch):
    """safetensors' own error (its text carries the OS error) is recognised as well."""
    real = checkpoint.save_file

    def save(tensors, path):
        if "step-00000004" in str(path):
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        return real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", save)
    run = tmp_path / "run"
    assert _train(spec, run) == 2
    _assert_clean_failure(
        capsys, run, "checkpoints/step-00000004/optimizer.safetensors", "step-00000002"
    )


def test_full_disk_at_the_model_then_resume_finishes(spec, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    seen = _fail_on(
        monkeypatch, serialization, "save_file", run, lambda p: p.parent == run / "model"
    )
    assert _train(spec, run) == 2
    _assert_clean_failure(capsys, run, "model/model.safetensors", "step-00000006")
    assert _files(run / "checkpoints") == seen["checkpoints"]
    assert not (run / "model" / "model.safetensors").exists()
    monkeypatch.undo()  # space was freed: --resume saves the model from the last checkpoint
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert (run / "model" / "model.safetensors").is_file()


def test_full_disk_at_the_log(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path / "log.jsonl")

    class Full:
        def write(self, *text):
            raise OSError(errno.ENOSPC, "No space left on device")

        flush = close = write

    monkeypatch.setattr(log, "_file", Full())
    with pytest.raises(WriteError, match=f"log.jsonl: {FULL}"):
        log.write(1, {"loss": 1.0})
    log.close()  # does not raise a second time


def _codes(path):
    save_codes(path, np.zeros((2, 4, 4), np.int64), None, 8)


def _picture(path):
    plots.save_image_grid(path, [np.zeros((2, 1, 8, 8), np.float32)])


def _curves(path):
    plots.plot_loss_curves(path, [{"step": 1, "train/loss": 1.0}], ["train/loss"], "t")


def _metrics(path):
    files.atomic_write_text(path, json.dumps({"mse": 0.1}))


def _model(path):
    serialization.save_module(torch.nn.Linear(2, 2), {}, path.parent)


WRITERS = {
    "codes/train.safetensors": _codes,
    "reconstructions.png": _picture,
    "loss_curves.png": _curves,
    "metrics.json": _metrics,
    "model/model.safetensors": _model,
}


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_every_writer_names_its_file_and_leaves_the_old_one(name, code, tmp_path, monkeypatch):
    """A refused flush (``fsync`` is where a full disk shows when writes were buffered)."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"the previous version")

    def fsync(fd):
        raise OSError(code, __import__("os").strerror(code))

    monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(WriteError) as info:
        WRITERS[name](path)
    reason = __import__("os").strerror(code)
    assert str(info.value) == f"{path}: {reason[0].lower()}{reason[1:]}"
    assert path.read_bytes() == b"the previous version"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(ValueError), files.atomic_path(tmp_path / "x"):  # a bug stays one
        raise ValueError("a bug")
    with pytest.raises(ConnectionResetError), files.writing(tmp_path / "x"):
        raise ConnectionResetError(errno.ECONNRESET, "reset")
    assert list(tmp_path.iterdir()) == []


def test_a_codes_file_survives_a_failed_rewrite(tmp_path, monkeypatch):
    path = tmp_path / "train.safetensors"
    _codes(path)
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "x")))
    with pytest.raises(WriteError):
        save_codes(path, np.ones((2, 4, 4), np.int64), None, 8)
    assert load_codes(path).indices.max() == 0
