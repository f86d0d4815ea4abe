"""Two processes on the CPU with gloo, launched by torchrun: codebooks and weights stay
bit-identical on both ranks after every step (including steps with a dead-code reset), two
ranks with batch b give the statistics of one process with batch 2b, a NaN on one rank is
skipped by both, and the CLI trains under torchrun with only rank 0 writing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_gloo_worker as worker
import numpy as np
import pytest
import torch
from helpers import tiny_image_model
from safetensors.torch import load_file

WORKER = Path(worker.__file__)
TIMEOUT_S = 240  # a hung collective fails the test instead of stalling CI
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VQVAE_THREADS": "1"}
    result = subprocess.run(
        TORCHRUN + args, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=cwd
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    _torchrun([str(WORKER), str(out)], cwd=out)
    return out


def test_codebooks_and_weights_identical_on_every_rank_after_every_step(ranks):
    r0 = json.loads((ranks / "resets-rank0.json").read_text())
    r1 = json.loads((ranks / "resets-rank1.json").read_text())
    assert len(r0["digests"]) == worker.STEPS
    for step, (a, b) in enumerate(zip(r0["digests"], r1["digests"], strict=True), start=1):
        assert a == b, f"ranks differ after step {step}"
    # The run must have exercised a dead-code reset (rank 0 picks, every rank applies it).
    assert r0["resets"][-1] > 0 and r0["resets"] == r1["resets"], r0["resets"]
    s0 = load_file(ranks / "resets-rank0.safetensors")
    s1 = load_file(ranks / "resets-rank1.safetensors")
    assert s0.keys() == s1.keys()
    for name in s0:
        assert torch.equal(s0[name], s1[name]), name


def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(ranks):
    two = load_file(ranks / "ema-rank0.safetensors")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each worker (faster for a tiny model on a shared machine)
    try:
        single = worker.train_single(worker.EMA_QUANTIZER, 16)
    finally:
        torch.set_num_threads(threads)
    one = {k: v.detach() for k, v in single.state_dict().items()}
    assert two.keys() == one.keys()
    # The EMA statistics (counts and sums) and every weight agree up to float rounding: the
    # sums over ranks and the averaged gradients add the same numbers in another order.
    for name in ("quantizer.cluster_size", "quantizer.embed_sum", "quantizer.codebook"):
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-5, msg=name)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    # ...and they are not trivially equal: one step moved the EMA counts away from their start.
    assert not torch.equal(
        one["quantizer.cluster_size"], torch.ones_like(one["quantizer.cluster_size"])
    )


def test_a_nonfinite_loss_on_one_rank_is_skipped_on_every_rank(ranks):
    r0 = json.loads((ranks / "skip-rank0.json").read_text())
    r1 = json.loads((ranks / "skip-rank1.json").read_text())
    assert r0 == r1
    assert r0["skipped"] == 2 and r0["step"] == worker.STEPS


def test_cli_under_torchrun_trains_with_rank_zero_writing(tmp_path):
    rng = np.random.default_rng(0)
    images = (rng.random((48, 8, 8)) * 255).astype(np.uint8)
    np.savez(tmp_path / "tiny.npz", images=images)
    run = tmp_path / "run"
    tiny = [
        *tiny_image_model(codebook_size=8),
        "train.batch_size=8",
        "train.log_every=1",
        "train.checkpoint_every=1",
    ]
    args = ["-m", "vqvae.cli.main", "train", "--data", f"npz:{tmp_path / 'tiny.npz'}"]
    result = _torchrun([*args, "--out", str(run), "--steps", "3", *tiny], cwd=tmp_path)
    assert result.stdout.count("training finished step 3") == 1  # rank 0 alone reports
    assert (run / "model" / "model.safetensors").is_file()
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]  # one writer: the thread policy, then every step logged once
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000003"


def test_vqvae2_priors_under_torchrun_leave_one_run_folder(tmp_path):
    """Both VQ-VAE-2 priors train under torchrun: every rank trains, rank 0 alone deletes,
    saves, writes the config and reports; the folder holds exactly one run."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", images=(rng.random((48, 8, 8)) * 255).astype(np.uint8))
    run = tmp_path / "run"
    model = [
        "model.kind=vqvae2",
        "model.downsample=2",
        "model.top_downsample=2",
        "model.hidden=8",
        "model.res_hidden=4",
        "model.res_blocks=1",
        "model.quantizer.codebook_size=8",
        "model.quantizer.dim=4",
        "model.top_quantizer.codebook_size=4",
        "model.top_quantizer.dim=4",
        "train.batch_size=8",
    ]
    from vqvae.cli.main import main

    assert main(["train", "--data", f"npz:{tmp_path / 'tiny.npz'}", "--out", str(run),
                 "--steps", "2", *model]) == 0  # fmt: skip
    small = ["channels=8", "layers=1", "kernel_size=3"]
    priors = [*(f"prior.{s}" for s in small), *(f"bottom_prior.{s}" for s in small)]
    args = ["-m", "vqvae.cli.main", "train-prior", str(run), "--steps", "3"]
    result = _torchrun([*args, *priors, "prior_train.batch_size=8", "prior_train.log_every=1",
                        "prior_train.checkpoint_every=1"], cwd=tmp_path)  # fmt: skip
    assert result.stdout.count("prior, test split:") == 1  # rank 0 alone measures and reports
    for level in ("prior", "prior_bottom"):
        assert (run / level / "model" / "model.safetensors").is_file()
        lines = (run / level / "log.jsonl").read_text().splitlines()
        # one writer: the thread policy at step 0, then every step once
        assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3]
        assert (run / level / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    saved = json.loads((run / "config.json").read_text())
    assert saved["prior"]["codebook_size"] == 4 and saved["bottom_prior"]["cond_codebook_size"] == 4
    assert sorted(p.name for p in (run / "codes").iterdir()) == [
        "test-bottom.safetensors", "test-top.safetensors",
        "train-bottom.safetensors", "train-top.safetensors",
    ]  # fmt: skip
