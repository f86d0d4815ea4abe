#!/usr/bin/env bash
# bf16 against fp32 on MNIST at equal wall clock (issue #17): the shipped config trained for
# 10 minutes in each precision, one after the other on an otherwise idle machine, then both
# evaluated on the test split. About 22 minutes.
#
#   flock /tmp/vqvae-cpu.lock benchmarks/bf16_mnist.sh ../shared/data/mnist runs/bf16
#
# Writes benchmarks/results/bf16_mnist.json: steps, PSNR, usage and perplexity of each run, and
# the PSNR difference bf16 - fp32 (the issue asks for it within 0.3 dB, usage >= 0.95).
set -euo pipefail
MNIST=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
VQVAE=${VQVAE:-vqvae}
PYTHON=${PYTHON:-python3}
MINUTES=${MINUTES:-10}
RESULT=${RESULT:-$HERE/results/bf16_mnist.json}
mkdir -p "$OUT"
for precision in fp32 bf16; do
  $VQVAE train --data "mnist:$MNIST" --out "$OUT/$precision" --config "$HERE/../configs/mnist.toml" \
    --minutes "$MINUTES" "train.precision=$precision"
  $VQVAE evaluate "$OUT/$precision"
done
$PYTHON - "$OUT" "$RESULT" "$MINUTES" <<'PY'
import datetime, json, sys
from pathlib import Path
out, result, minutes = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
rows = {}
for precision in ("fp32", "bf16"):
    metrics = json.loads((out / precision / "metrics.json").read_text())
    latest = (out / precision / "checkpoints" / "latest").read_text().strip()  # step-00004176
    rows[precision] = {
        "steps": int(latest.rsplit("-", 1)[1]),
        **{k: metrics[k] for k in ("psnr", "ssim", "codebook_usage", "perplexity", "dead_codes")},
    }
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
summary = {
    "minutes": minutes,
    "config": "configs/mnist.toml",
    **rows,
    "psnr_bf16_minus_fp32": rows["bf16"]["psnr"] - rows["fp32"]["psnr"],
    "cpu": cpu,
    "date": datetime.date.today().isoformat(),
}
result.write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
