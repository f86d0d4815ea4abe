"""Crash-safe, exact resume through the real command line: SIGTERM saves and exits cleanly; a
run killed with SIGKILL at a random moment and resumed with --resume ends with the same weights
(and the same log) as a run never interrupted; a crash at any point of a checkpoint save leaves
the previous checkpoint in charge."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_image_model, tiny_vqvae
from safetensors.torch import load_file

from vqvae.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

STEPS = 120
TIMEOUT_S = 180
TINY = [
    *tiny_image_model(codebook_size=16),
    # Dead-code resets every few steps, so their state (usage, recent outputs, RNG) is resumed.
    "model.quantizer.dead_code_threshold=1.0",
    "model.quantizer.usage_decay=0.5",
    "train.batch_size=16",
    "train.checkpoint_every=1",  # most of the time is spent saving: kills land mid-save too
    "train.log_every=5",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "VQVAE_THREADS": "1"}


def _train(data: str, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vqvae.cli.main", "train", "--data", data, "--out", str(out)]
    return subprocess.Popen(
        [*cmd, "--steps", str(STEPS), *TINY, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _resume(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vqvae.cli.main", "train", "--out", str(out)]
    return subprocess.Popen(
        [*cmd, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def _wait_for_checkpoint(run: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not (run / "checkpoints" / "latest").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, out, err


def _latest_step(run: Path) -> int:
    return int((run / "checkpoints" / "latest").read_text().strip().removeprefix("step-"))


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while _latest_step(run) < step:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the resumed run made no progress"
        time.sleep(0.002)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run interrupted twice, against one never interrupted: SIGTERM right after its first
    checkpoint, --resume, SIGKILL at a random step of the resumed run,
    --resume to the end."""
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    np.savez(root / "tiny.npz", images=(rng.random((64, 8, 8)) * 255).astype(np.uint8))
    data = f"npz:{root / 'tiny.npz'}"
    # The kill moment is random on every CI run; VQVAE_KILL_SEED replays a failing one. It is
    # chosen as a step (the machine's speed does not decide whether it lands before the end)
    # plus a fraction of a step's time, so it lands mid-step or mid-save.
    seed = int(os.environ.get("VQVAE_KILL_SEED", random.randrange(1 << 30)))
    chooser = random.Random(seed)
    delay = chooser.uniform(0.0, 0.01)
    ref, run = root / "ref", root / "run"
    reference = _train(data, ref)

    first = _train(data, run)
    _wait_for_checkpoint(run, first)
    first.send_signal(signal.SIGTERM)
    info = {"seed": seed, "delay": delay, "termed": _finish(first), "termed_at": _latest_step(run)}

    info["kill_step"] = chooser.randint(info["termed_at"] + 1, STEPS // 2)
    second = _resume(run)
    _wait_for_step(run, info["kill_step"], second)
    time.sleep(delay)
    second.send_signal(signal.SIGKILL)
    info["killed_rc"] = _finish(second)[0]
    info["killed_at"] = _latest_step(run)

    info["resumed"] = _finish(_resume(run))
    rc, _, err = _finish(reference)
    assert rc == 0, err
    return ref, run, info


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = (
        load_file(a / "model" / "model.safetensors"),
        load_file(b / "model" / "model.safetensors"),
    )
    assert wa.keys() == wb.keys()
    different = [name for name in wa if not torch.equal(wa[name], wb[name])]
    assert not different, f"tensors differ after resume: {different}"


def test_sigterm_saves_and_exits_cleanly(runs):
    _, run, info = runs
    rc, out, err = info["termed"]
    assert rc == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    step = info["termed_at"]
    assert f"training interrupted at step {step}" in out and "--resume" in out
    assert 1 <= step < STEPS


def test_sigkill_at_a_random_step_then_resume_ends_bit_identical(runs):
    ref, run, info = runs
    note = (
        f"(VQVAE_KILL_SEED={info['seed']}, killed {info['delay'] * 1000:.1f} ms after "
        f"checkpoint {info['kill_step']} of the resumed run)"
    )
    assert info["killed_rc"] == -signal.SIGKILL, note
    assert info["termed_at"] < info["killed_at"] < STEPS, f"the kill came too late {note}"
    rc, _, err = info["resumed"]
    assert rc == 0, err
    _assert_same_weights(ref, run)
    # The log is the uninterrupted one too: rows after each checkpoint were dropped and
    # re-logged, and the codebook-health window came back with the checkpoint. (Each process
    # also records the thread policy it computed with: a row of its own, once per process.)
    assert _training_rows(run) == _training_rows(ref), note
    assert sum('"threads/policy"' in row for row in _log_rows(run)) == 3  # three processes


def _log_rows(run: Path) -> list[str]:
    return (run / "log.jsonl").read_text().splitlines()


def _training_rows(run: Path) -> list[str]:
    return [row for row in _log_rows(run) if '"threads/' not in row]


class _Crash(Exception):
    pass


def _tiny_model():
    return tiny_vqvae(codebook_size=4, dim=2)


def test_a_crash_at_any_point_of_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Every file of a checkpoint is one atomic rename and ``latest`` is switched last; a crash
    in place of any one of those renames leaves checkpoint 1 complete and in charge."""
    model = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    step1 = {"step": 1, "elapsed": 0.0, "batches": {"epoch": 0, "position": 0, "seed": 0}}
    step2 = {**step1, "step": 2}
    good = {k: v.clone() for k, v in model.state_dict().items()}
    real_replace = os.replace
    renames = []

    def replace(src, dst):
        renames.append(dst)
        if len(renames) == crash_at:
            raise _Crash
        return real_replace(src, dst)

    crash_at = 0  # count the renames of one save first
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path / "count", model, optimizer, step2)
    writes = len(renames)
    assert writes >= 4 and Path(renames[-1]).name == "latest"

    for crash_at in range(1, writes + 1):
        directory = tmp_path / f"crash-{crash_at}"
        monkeypatch.setattr(os, "replace", real_replace)
        save_checkpoint(directory, model, optimizer, step1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # step 2's weights differ
        renames.clear()
        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(_Crash):
            save_checkpoint(directory, model, optimizer, step2)
        monkeypatch.setattr(os, "replace", real_replace)

        latest = latest_checkpoint(directory)
        assert latest is not None and latest.name == "step-00000001", crash_at
        restored = _tiny_model()
        state, _ = load_checkpoint(latest, restored, torch.optim.AdamW(restored.parameters()))
        assert state["step"] == 1
        for name, value in restored.state_dict().items():
            assert torch.equal(value, good[name]), (crash_at, name)
        # The next save of step 2 succeeds over whatever the crash left.
        assert save_checkpoint(directory, model, optimizer, step2).name == "step-00000002"
        assert latest_checkpoint(directory).name == "step-00000002"
        model.load_state_dict(good)


def test_sigterm_stops_a_prior_promptly_and_resume_finishes_it(runs, tmp_path):
    """train-prior stopped by SIGTERM exits 128 + 15 with the resume command, leaves its
    checkpoint and no prior model (a half-trained prior is not presented as finished, nor
    measured), and ``--resume`` finishes it."""
    import shutil

    ref, _, _ = runs
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    prior = [sys.executable, "-m", "vqvae.cli.main", "train-prior", str(run)]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    proc = subprocess.Popen([*prior, "--steps", "5000", "prior_train.checkpoint_every=1"], **pipes)
    _wait_for_checkpoint(run / "prior", proc)
    proc.send_signal(signal.SIGTERM)
    rc, out, err = _finish(proc)
    assert rc == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "prior interrupted at step" in out and f"vqvae train-prior {run} --resume" in out
    assert "prior, test split" not in out  # not measured
    assert not (run / "prior" / "model").exists()
    step = _latest_step(run / "prior")
    assert 1 <= step < 5000

    resumed = subprocess.run([*prior, "--resume", "--steps", str(step + 3)], **pipes)
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "prior" / "model" / "model.safetensors").is_file()
    assert _latest_step(run / "prior") == step + 3
