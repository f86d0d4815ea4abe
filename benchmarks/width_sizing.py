"""The VQ-VAE's width on tiny data: ``vqvae train --data digits`` with the width the data now
selects (``model.hidden`` left unset: 64 for the 1,797 8×8 digits) against the fixed 128
channels of before, same steps, one run: held-out PSNR, SSIM, parameters, training seconds and
the run folder's size after ``vqvae train-prior`` with its default (fitted) prior.

    python benchmarks/width_sizing.py --steps 2000

Writes ``benchmarks/results/width_sizing.json`` (rows: width, parameters, psnr, ssim,
train_seconds, run_folder_mb) with the CPU and date. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vqvae.threads import cpu_name

ROOT = Path(__file__).resolve().parent.parent


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def vqvae(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "vqvae.cli.main", *args], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode != 0:
        raise SystemExit(f"vqvae {' '.join(args)}: exit {out.returncode}\n{out.stderr}")
    return out.stdout


def test_metrics(printed: str) -> dict[str, float]:
    """The "test split:" block ``vqvae train`` prints: ``  name   value`` lines."""
    block = printed.split("test split:", 1)[1]
    pairs = (line.split() for line in block.splitlines() if line.startswith("  "))
    return {k: float(v) for k, v in pairs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--prior-steps", type=int, default=500)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/width_sizing.json")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="width-") as tmp:
        for width in ("fitted", "128"):
            run = Path(tmp) / width
            extra = [] if width == "fitted" else [f"model.hidden={width}"]
            start = time.perf_counter()
            printed = vqvae(
                "train", "--data", args.data, "--out", str(run), "--steps", str(args.steps), *extra
            )
            seconds = time.perf_counter() - start
            vqvae("train-prior", str(run), "--steps", str(args.prior_steps))
            config = json.loads((run / "config.json").read_text())
            metrics = test_metrics(printed)
            from safetensors import safe_open

            with safe_open(run / "model" / "model.safetensors", "pt") as f:
                parameters = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
            row = {
                "width": config["model"]["hidden"],
                "set_by": "data (fitted)" if width == "fitted" else "model.hidden=128",
                "parameters": parameters,
                "psnr": round(metrics["psnr"], 2),
                "ssim": round(metrics["ssim"], 4),
                "train_seconds": round(seconds, 1),
                "run_folder_mb": round(folder_mb(run), 2),
                "steps": args.steps,
                "data": args.data,
                "cpu": cpu_name(),
                "cpus": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
