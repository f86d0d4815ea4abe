"""benchmarks/sampling_speed.py at tiny sizes writes the rows and ratios the README reads."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_sampling_speed_rows_and_ratios(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [sys.executable, str(BENCHMARKS / "sampling_speed.py"), "--grids", "4", "--n", "2"]
    cmd += ["--batches", "1", "2", "--latency-maps", "2", "--repeats", "1"]
    cmd += ["--batch-threads", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    # 4x4 with K = 512: train-prior fits dim 64 (not the fixed 128), so both networks are run
    assert set(result["settings"]["networks"]) == {"4x4 fitted", "4x4 fixed"}
    batch_rows = [r for r in result["rows"] if "network" in r]
    assert {(r["prior"], r["network"], r["batch"]) for r in batch_rows} == {
        (p, n, b)
        for p in ("pixelcnn", "transformer", "maskgit")
        for n in ("fitted", "fixed")
        for b in (1, 2)
    }
    for r in batch_rows:
        assert 0 < r["images_per_s"] < math.inf
        assert math.isclose(r["codes_per_s"], r["images_per_s"] * 16, rel_tol=0.02)
    ratios = result["maskgit_over_transformer"]
    assert {(tuple(r["grid"]), r["network"], r["batch"], r["threads"]) for r in ratios} == {
        ((4, 4), n, b, t) for n in ("fitted", "fixed") for b in (1, 2) for t in (1, "best of each")
    }
    assert all(r["same_samples"] for r in result["ratios"])  # cached = full recomputation
