#!/usr/bin/env bash
# Every speed measurement of benchmarks/README.md "Speed", one after the other, on an otherwise
# idle machine (2 threads each; anything else running on the cores invalidates the figures):
#
#   benchmarks/run_speed.sh ../shared/data/mnist runs/speed
#
# quantizer_speed.py, train_speed.py (with the 1,000-step MNIST quality check), encode_speed.py,
# then time-to-quality: the shipped MNIST config trained for 10 minutes and evaluated.
set -euo pipefail
MNIST=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
VQVAE=${VQVAE:-vqvae}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
$PYTHON "$HERE/quantizer_speed.py" --threads 2
$PYTHON "$HERE/train_speed.py" --threads 2 --rounds 8 --data "mnist:$MNIST" --quality-steps 1000
$PYTHON "$HERE/encode_speed.py" --threads 2
$VQVAE train --data "mnist:$MNIST" --out "$OUT/mnist-10min" --config "$HERE/../configs/mnist.toml" \
  --minutes 10
$VQVAE evaluate "$OUT/mnist-10min"
