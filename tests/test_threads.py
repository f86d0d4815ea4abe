"""The thread policy (vqvae.threads): it never asks for more threads than the CPUs available to
the process, it sees other busy work and leaves room for it, a training loop follows the load,
and ``--threads`` / ``VQVAE_THREADS`` override it (honoured, printed and logged)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from vqvae import threads
from vqvae.cli.main import main
from vqvae.errors import ConfigError

APPLY = threads.apply_policy  # the real one: conftest keeps in-process commands at the test's count


@pytest.fixture
def keep_torch_threads(monkeypatch):
    """Whatever a test applies, the process gets its thread count and policy back."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "apply_policy", APPLY)
    monkeypatch.setattr(threads, "_POLICY", None)
    monkeypatch.setattr(threads, "_ANNOUNCED", False)
    yield
    torch.set_num_threads(before)


def test_threads_beside_other_work_stay_within_the_cpus():
    for cpus in range(1, 9):
        for busy in [0, 0.4, 0.6, 1, 2.5, cpus, 3 * cpus]:
            n = threads.threads_beside(busy, cpus)
            assert 1 <= n <= cpus
            assert n == max(1, min(cpus, round(cpus - busy)))
    assert threads.threads_beside(0, 2) == 2
    assert threads.threads_beside(1, 2) == 1  # one busy loop beside us: one core each
    assert threads.threads_beside(1, 16) == 15


def test_available_cpus_follow_affinity_and_cgroup_quota(monkeypatch):
    affinity = len(os.sched_getaffinity(0))
    assert 1 <= threads.available_cpus() <= affinity
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 0.5)  # half a CPU: still one thread
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 64.0)  # a quota above the mask
    assert threads.available_cpus() == affinity


def test_auto_policy_never_asks_for_more_threads_than_available(monkeypatch, keep_torch_threads):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    policy = threads.apply_policy()
    assert policy.adaptive and policy.source == "auto"
    assert 1 <= policy.threads <= threads.available_cpus()
    assert torch.get_num_threads() == policy.threads
    assert threads.current_policy() is policy


def test_a_busy_process_is_seen_as_other_work():
    """A busy loop is always running or waiting to run: every snapshot counts it."""
    baseline_busy = subprocess.Popen(
        [sys.executable, "-c", "print('ready', flush=True)\nwhile True: pass"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert baseline_busy.stdout.readline().strip() == "ready"
        assert threads.other_runnable() >= 1.0
    finally:
        baseline_busy.kill()
        baseline_busy.wait()


def test_auto_policy_follows_the_load_and_a_fixed_one_does_not(monkeypatch, keep_torch_threads):
    load = {"busy": 0.0}
    monkeypatch.setattr(threads, "other_runnable", lambda: load["busy"])
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    policy = threads.apply_policy()
    assert policy.threads == 4
    now = policy._next_look
    load["busy"] = 2.0
    assert not policy.retune(now - 0.1)  # not yet time to look again
    assert policy.retune(now) and policy.threads == 2 and torch.get_num_threads() == 2
    load["busy"] = 0.0
    assert not policy.retune(now + 1)  # the next look is RETUNE_SECONDS later
    assert policy.retune(now + threads.RETUNE_SECONDS) and policy.threads == 4
    assert "auto: 4 CPUs available" in policy.describe()

    fixed = threads.apply_policy(3)
    load["busy"] = 3.0
    assert not fixed.retune(now + 100) and fixed.threads == 3 and torch.get_num_threads() == 3
    assert "fixed by --threads" in fixed.describe()


def test_override_order_and_bad_values(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    monkeypatch.setenv(threads.ENV, "auto")
    assert threads.requested_threads(None) == (5, "OMP_NUM_THREADS")  # the user's OpenMP choice
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.requested_threads(None) == (3, threads.ENV)
    assert threads.requested_threads(1) == (1, "--threads")  # the option wins over the variable
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv(threads.ENV, "auto")
    assert threads.requested_threads(None) == (None, "auto")
    for bad in ["0", "-1", "two", "1.5"]:
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(ConfigError, match=threads.ENV):
            threads.requested_threads(None)
    with pytest.raises(ConfigError, match="--threads"):
        threads.requested_threads(0)


def test_the_cli_honours_prints_and_logs_the_override(
    tmp_path, monkeypatch, capsys, keep_torch_threads
):
    import helpers

    spec = helpers.write_bar_images(tmp_path, 64)
    run = tmp_path / "run"
    argv = ["train", "--data", spec, "--out", str(run), "--steps", "3", "--threads", "1"]
    assert main([*argv, *helpers.tiny_image_model(), "train.batch_size=16"]) == 0
    assert torch.get_num_threads() == 1
    err = capsys.readouterr().err
    assert err.count("compute thread(s)") == 1  # printed once
    assert "1 compute thread(s) (fixed by --threads" in err
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and rows[0]["threads/count"] == 1
    assert "fixed by --threads" in rows[0]["threads/policy"]

    monkeypatch.setenv(threads.ENV, "2")
    assert (
        main(
            ["reconstruct", str(run), "--data", spec, "--n", "2", "--out", str(tmp_path / "r.png")]
        )
        == 0
    )
    assert torch.get_num_threads() == 2
    assert "compute thread" not in capsys.readouterr().err  # training prints it, not this

    monkeypatch.setenv(threads.ENV, "lots")
    status = main(["reconstruct", str(run), "--n", "2", "--out", str(tmp_path / "s.png")])
    assert status == 2
    assert "VQVAE_THREADS must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_passive_waiting_is_set_before_torch_loads_unless_the_user_chose():
    """In a fresh process the command sets OMP_WAIT_POLICY=PASSIVE before PyTorch loads, and
    leaves a user's own choice alone."""
    code = (
        "import os, sys\n"
        "from vqvae.cli import main as cli\n"
        "assert 'torch' not in sys.modules, 'the CLI module must not load torch'\n"
        "cli.threads.prefer_passive_wait()\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE"
