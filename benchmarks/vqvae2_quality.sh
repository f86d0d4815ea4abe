#!/usr/bin/env bash
# VQ-VAE-2 from the CLI: train, train both priors, sample, evaluate (with sample quality).
#
#   benchmarks/vqvae2_quality.sh fashion-mnist:../shared/data/fashion-mnist runs/quality-fashion
#
# 28×28 images: bottom codes 14×14 (K = 256), top codes 7×7 (K = 256). The top prior is a gated
# PixelCNN, the bottom prior a gated PixelCNN conditioned on the top codes; both class-
# conditional with label dropout 0.1. Uses OUT/classifier (shared with sample_quality.sh when
# OUT is the same folder). Budgets: VQ_STEPS (1500), PRIOR_STEPS (1000 per level), SAMPLES (2000).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # see sample_quality.sh
SPEC=$1
OUT=$2
VQ_STEPS=${VQ_STEPS:-1500}
PRIOR_STEPS=${PRIOR_STEPS:-1000}
SAMPLES=${SAMPLES:-2000}
VQVAE=${VQVAE:-vqvae}
RUN="$OUT/vqvae2"
mkdir -p "$OUT"

$VQVAE train --data "$SPEC" --out "$RUN" model.kind=vqvae2 \
  model.downsample=2 model.top_downsample=2 model.hidden=64 model.res_hidden=32 \
  model.res_blocks=2 model.quantizer.codebook_size=256 model.quantizer.dim=32 \
  model.top_quantizer.codebook_size=256 model.top_quantizer.dim=32 \
  train.steps="$VQ_STEPS" train.batch_size=64 train.checkpoint_every=500
PIXELCNN="channels=64 layers=6 kernel_size=3 dropout=0.1 label_dropout=0.1"
$VQVAE train-prior "$RUN" prior_train.steps="$PRIOR_STEPS" prior_train.batch_size=64 \
  $(for kv in $PIXELCNN; do echo "prior.$kv bottom_prior.$kv"; done)
$VQVAE sample "$RUN" --n 10 --out "$RUN/samples.png"
$VQVAE sample "$RUN" --n 10 --complete --out "$RUN/completions.png"
$VQVAE evaluate "$RUN" --samples "$SAMPLES" --classifier "$OUT/classifier"
cp "$RUN/metrics.json" "$RUN/metrics-plain.json"
