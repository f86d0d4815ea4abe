"""The speed benchmarks in --quick mode (tiny shapes) write the JSON rows the README reads, and
the plain reference quantizer they compare against picks the codes ours picks."""

import json
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


def run_quick(script: str, out: Path, *extra: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(BENCHMARKS / script), "--quick", "--threads", "1"]
    done = subprocess.run(
        [*cmd, "--out", str(out), *extra], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_quantizer_speed_rows(tmp_path):
    pytest.importorskip("vector_quantize_pytorch")
    # One child process (each pays torch's import); the other impls are built in-process below.
    rows = run_quick("quantizer_speed.py", tmp_path / "q.json", "--impls", "ours")
    assert [r["impl"] for r in rows] == ["ours"]
    for r in rows:
        assert {"config", "impl", "median_ms", "peak_mem_mb", "vectors_per_s", "oom"} <= set(r)
        assert r["median_ms"] > 0 and not r["oom"]


@pytest.mark.parametrize("impl", ["ours", "vqp", "plain", "matmul", "conv"])
def test_quantizer_speed_steps_run(impl):
    if impl == "vqp":
        pytest.importorskip("vector_quantize_pytorch")
    from quantizer_speed import build_step

    step = build_step(impl, (2, 8, 3, 3), 16)
    step()
    step()


def test_train_speed_rows(tmp_path):
    impls = ["ours", "plain", "floor", "ours_fit", "ours_search_only"]
    rows = run_quick("train_speed.py", tmp_path / "t.json", "--impls", *impls)
    # plain is also timed in ours's process (plain_kept): our allocator setting without our code
    assert sorted(r["impl"] for r in rows) == sorted([*impls, "plain_kept"])
    assert {r["impl"]: r["allocator"] for r in rows}["plain"] == "default"
    for r in rows:
        assert {"shape", "impl", "images_per_s", "psnr"} <= set(r)
        assert r["images_per_s"] > 0 and r["psnr"] is None  # no --data: no quality run
    assert len({r["parameters"] for r in rows}) == 1  # the same network


def test_encode_speed_rows(tmp_path):
    rows = run_quick("encode_speed.py", tmp_path / "e.json")
    assert sorted(r["impl"] for r in rows) == ["pixelcnn", "transformer", "vqvae"]
    assert all(r["images_per_s"] > 0 for r in rows)


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
