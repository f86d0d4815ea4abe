"""The speed benchmarks in --quick mode (tiny shapes) write the JSON rows the README reads (keys
present, timings finite and positive, rates that agree with the timings) and print their table,
and the plain reference quantizer they compare against picks the codes ours picks."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from _timing import PlainEMAQuantizer  # noqa: E402

from vqvae.quantizers import EMAVectorQuantizer  # noqa: E402


def run_quick(script: str, out: Path, *extra: str) -> tuple[list[dict], str]:
    """Run ``script --quick`` (one round of two timed calls after one warm-up); the rows it
    wrote to ``out`` and what it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(BENCHMARKS / script), "--quick", "--threads", "1"]
    done = subprocess.run(
        [*cmd, "--out", str(out), *extra], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.rstrip().endswith(f"threads=1; wrote {out}")
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)
    return rows, done.stdout


def positive(value) -> bool:
    """A finite number above zero (not a bool, not None, not NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of the last markdown table printed, header first."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("|")]
    last_header = max(i for i, ln in enumerate(lines) if ln.startswith("|---")) - 1
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[last_header:]]


def test_quantizer_speed_rows(tmp_path):
    # One child process (each pays torch's import); the other impls are built in-process below.
    rows, stdout = run_quick("quantizer_speed.py", tmp_path / "q.json", "--impls", "ours")
    (r,) = rows
    assert {"config", "impl", "median_ms", "peak_mem_mb", "vectors_per_s", "oom", "steps"} <= set(r)
    assert (r["config"], r["impl"], r["oom"], r["steps"]) == ("4x8x4x4 K=16", "ours", False, 2)
    assert "error" not in r
    assert positive(r["median_ms"]) and positive(r["vectors_per_s"])
    assert positive(r["peak_mem_mb"] + 1)  # a finite number; 0 when nothing new was allocated
    # 4x8x4x4 is 64 vectors of 8; vectors/s is computed from the unrounded median.
    assert r["vectors_per_s"] == pytest.approx(64 / (r["median_ms"] / 1000), rel=1e-2)
    header, _, row = table_rows(stdout)
    assert header[:2] == ["config", "ours (ms / peak MB)"]
    assert row[0] == "4x8x4x4 K=16" and row[1].startswith(f"{r['median_ms']:.3g} ms")


@pytest.mark.parametrize("impl", ["ours", "vqp", "plain", "matmul", "conv", "simvq", "lfq", "bsq"])
def test_quantizer_speed_steps_run(impl):
    if impl == "vqp":
        pytest.importorskip("vector_quantize_pytorch")
    from _timing import time_calls
    from quantizer_speed import build_step

    step = build_step(impl, (2, 8, 3, 3), 16)
    times = time_calls(step, repeats=2, warmup=1)  # what the script's child process times
    assert len(times) == 2 and all(positive(t) for t in times)


def test_train_speed_rows(tmp_path):
    impls = ["ours", "plain", "floor", "ours_fit", "ours_search_only"]
    rows, stdout = run_quick("train_speed.py", tmp_path / "t.json", "--impls", *impls)
    # plain is also timed in ours's process (plain_kept): our allocator setting without our code
    assert sorted(r["impl"] for r in rows) == sorted([*impls, "plain_kept"])
    assert {r["impl"]: r["allocator"] for r in rows}["plain"] == "default"
    for r in rows:
        assert {"shape", "impl", "images_per_s", "median_ms", "steps_timed", "psnr"} <= set(r)
        assert r["shape"] == "8x8x1 b4" and r["psnr"] is None  # no --data: no quality run
        assert positive(r["images_per_s"]) and positive(r["median_ms"]) and r["steps_timed"] > 0
        # b4: four images per step
        assert r["images_per_s"] == pytest.approx(4 / (r["median_ms"] / 1000), rel=1e-2)
    assert len({r["parameters"] for r in rows}) == 1  # the same network
    assert positive(rows[0]["parameters"])
    header, _, row = table_rows(stdout)
    assert header[0] == "shape" and "ours img/s" in header and row[0] == "8x8x1 b4"
    assert len(row) == len(header)


def test_encode_speed_rows(tmp_path):
    rows, stdout = run_quick("encode_speed.py", tmp_path / "e.json")
    assert sorted(r["impl"] for r in rows) == ["pixelcnn", "transformer", "vqvae"]
    for r in rows:
        assert {"task", "impl", "images_per_s", "median_ms", "batch", "grid"} <= set(r)
        assert r["task"] == ("encode" if r["impl"] == "vqvae" else "prior_train")
        # --quick: one pass over 64 images; prior steps on batches of 4 code maps of 7x7
        assert r["batch"] == (64 if r["impl"] == "vqvae" else 4) and r["grid"] == [7, 7]
        assert positive(r["images_per_s"]) and positive(r["median_ms"])
        assert r["images_per_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1000), rel=1e-2)
        assert positive(r["codebook_size"])
    header, _, *body = table_rows(stdout)
    assert header[:2] == ["task", "impl"]
    assert sorted(cells[1] for cells in body) == ["pixelcnn", "transformer", "vqvae"]


def test_plain_reference_picks_the_codes_ours_picks():
    # Two different searches (cdist vs the chunked ||e||² - 2z·e product) on random Gaussian
    # data, whose nearest and second-nearest codes are far apart compared with float32 rounding.
    torch.manual_seed(0)
    plain = PlainEMAQuantizer(64, 16).eval()
    ours = EMAVectorQuantizer(64, 16, kmeans_init=False).eval()
    ours.codebook.copy_(plain.codebook)
    z = torch.randn(8, 16, 6, 6)
    _, _, plain_indices = plain(z)
    assert torch.equal(ours(z).indices, plain_indices)


def test_out_of_memory_is_recorded_not_fatal():
    from _timing import run_child

    # plain needs a 4 GiB one-hot (and 4 GiB of distances) here: far over a 2 GiB cap.
    case = dict(shape=[64, 256, 32, 32], k=16384, impl="plain", threads=1, mem_cap_gib=2)
    got = run_child(BENCHMARKS / "quantizer_speed.py", {**case, "repeats": 1, "warmup": 0}, 60)
    assert got == {"oom": True}


def test_prior_sizing_rows(tmp_path):
    from helpers import tiny_image_model, write_bar_images

    from vqvae.cli.main import main

    run = tmp_path / "run"
    spec = write_bar_images(tmp_path, 40)
    argv = ["train", "--data", spec, "--out", str(run), "--steps", "3", "train.batch_size=16"]
    assert main([*argv, *tiny_image_model(8)]) == 0
    rows, stdout = run_quick("prior_sizing.py", tmp_path / "p.json", str(run), "--sweep", "8x2x3")
    assert [r["case"] for r in rows] == ["fixed", "fitted", "8x2x3"]
    fixed, fitted = rows[0], rows[1]
    assert (fixed["channels"], fixed["layers"], fixed["kernel_size"]) == (128, 12, 5)
    assert fitted["params"] < fixed["params"] and fitted["grid"] == [4, 4]
    for r in rows:
        assert positive(r["step_ms"]) and positive(r["nll_bits_per_code"]) and r["steps"] == 5
        assert r["speedup_vs_fixed"] == pytest.approx(fixed["step_ms"] / r["step_ms"], rel=0.02)
