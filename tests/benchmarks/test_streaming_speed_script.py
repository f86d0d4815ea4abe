"""benchmarks/streaming_speed.py in --quick mode (a small causal network, short synthetic clips),
with its default config and the speech codec's (``--config``, ``--chunks``), writes one row per
chunk size and the offline row, with rates that agree with the timings, outputs within 1e-5 of
the offline pass, and the machine it ran on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "streaming_speed.py"
CONFIG = "configs/fsdd-causal.toml"


# (extra arguments, chunk sizes of the rows (1024-sample clips: the last is the whole clip), hop)
CASES = [
    ([], [1, 7, 10, 20, 64, None], 16),  # configs/fsdd-causal.toml
    (["--config", "configs/fsdd-rvq.toml", "--chunks", "3", "5"], [3, 5, 32, None], 32),
]


@pytest.mark.parametrize(("extra", "chunks", "hop"), CASES, ids=["fsdd-causal", "fsdd-rvq"])
def test_streaming_speed_rows(tmp_path, extra, chunks, hop):
    out = tmp_path / "s.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--also-threads"]
    cmd += ["--data", "", "--out", str(out), *extra]  # synthetic clips
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=120, cwd=SCRIPT.parents[1]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.rstrip().endswith(f"threads=1; wrote {out}")
    rows = json.loads(out.read_text())
    assert [r["chunk_hops"] for r in rows] == chunks
    latency_ms = 1000 * hop / 8000
    config = extra[1] if extra else CONFIG
    for r in rows:
        assert r["threads"] == 1 and r["batch"] == 1 and r["cpu"] and r["date"]
        assert "streaming_speed.py" in r["command"] and r["algorithmic_latency_ms"] == latency_ms
        assert r["hop"] == hop and r["model"].startswith(config)
        seconds = r["clip_samples"] / r["sample_rate"]
        assert r["x_realtime"] == pytest.approx(seconds / (r["median_ms_per_clip"] / 1000), 0.01)
        if r["mode"] == "streaming":
            assert r["max_abs_diff"] <= 1e-5
            assert r["chunk_ms"] == r["chunk_hops"] * latency_ms
