#!/usr/bin/env bash
# Audio on the Free Spoken Digit Dataset, the whole two-stage pipeline in one go:
#
#   benchmarks/fsdd_audio.sh ../shared/data/fsdd/recordings benchmarks/runs/fsdd
#
# 1. OUT: the 1D VQ-VAE of configs/fsdd.toml (16× downsampling, K = 512: 500 codes/s, 4500 bit/s);
# 2. its class-conditional Transformer prior over the 384-code sequences (same config file);
# 3. `vqvae sample`: 4 clips of every digit as WAVs + spectrograms.png in OUT/samples/;
# 4. `vqvae evaluate --samples SAMPLES`, plain and with guidance scale 2: SNR, log-spectral
#    distance, bitrate, intelligibility (a log-mel digit classifier trained on the real training
#    audio, in OUT/classifier/), code probes, prior NLL and the classifier's accuracy on
#    class-conditional samples; kept as OUT/metrics-plain.json and OUT/metrics-guidance2.json;
# 5. OUT-8x: the same VQ-VAE at 8× downsampling (1000 codes/s, 9000 bit/s), no prior, judged by
#    the same classifier (OUT/classifier).
# The table lands in benchmarks/results/fsdd_audio.md, the metrics beside it (.json).
# Budgets come from configs/fsdd.toml; VQ_STEPS and PRIOR_STEPS override them. A stage whose
# model exists is skipped, so an interrupted measurement can be re-run (or resumed by hand with
# --resume). One thread per process: on a busy 2-core machine, two threads ran several times
# slower (thread hand-offs), and the prior's sampling 15× slower.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DATA=$1
OUT=$2
SAMPLES=${SAMPLES:-200}
VQVAE=${VQVAE:-vqvae}
HERE=$(cd "$(dirname "$0")" && pwd)
CONFIG="$HERE/../configs/fsdd.toml"
VQ_BUDGET=${VQ_STEPS:+--steps $VQ_STEPS}
PRIOR_BUDGET=${PRIOR_STEPS:+--steps $PRIOR_STEPS}

have() { [ -f "$1/model.safetensors" ]; }

have "$OUT/model" || $VQVAE train --data "fsdd:$DATA" --out "$OUT" --config "$CONFIG" $VQ_BUDGET
have "$OUT/prior/model" || $VQVAE train-prior "$OUT" --config "$CONFIG" $PRIOR_BUDGET
$VQVAE sample "$OUT" --n 4 --out "$OUT/samples"
$VQVAE evaluate "$OUT" --samples "$SAMPLES" --guidance-scale 2
cp "$OUT/metrics.json" "$OUT/metrics-guidance2.json"
$VQVAE evaluate "$OUT" --samples "$SAMPLES"
cp "$OUT/metrics.json" "$OUT/metrics-plain.json"

have "$OUT-8x/model" || $VQVAE train --data "fsdd:$DATA" --out "$OUT-8x" --config "$CONFIG" \
  model.downsample=8 $VQ_BUDGET
$VQVAE evaluate "$OUT-8x" --classifier "$OUT/classifier"

mkdir -p "$HERE/results"
python3 "$HERE/audio_table.py" "16×, plain sampling=$OUT/metrics-plain.json" \
  "16×, guidance 2=$OUT/metrics-guidance2.json" "8×=$OUT-8x/metrics.json" \
  > "$HERE/results/fsdd_audio.md"
cp "$OUT/metrics-plain.json" "$HERE/results/fsdd_audio_16x.json"
cp "$OUT/metrics-guidance2.json" "$HERE/results/fsdd_audio_16x_guidance2.json"
cp "$OUT-8x/metrics.json" "$HERE/results/fsdd_audio_8x.json"
cat "$HERE/results/fsdd_audio.md"
