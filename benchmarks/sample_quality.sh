#!/usr/bin/env bash
# Sample quality of the two-stage pipeline against a Gaussian VAE, on one dataset, in one go:
#
#   benchmarks/sample_quality.sh mnist:../shared/data/mnist runs/quality-mnist
#   benchmarks/sample_quality.sh fashion-mnist:../shared/data/fashion-mnist runs/quality-fashion
#
# 1. a VQ-VAE (7×7 codes, K = 256), copied into two runs;
# 2. a class-conditional gated PixelCNN prior in one, a Transformer prior in the other (both with
#    label dropout 0.1, so classifier-free guidance is available), the same step budget;
# 3. a Gaussian VAE with the same encoder/decoder, latent grid and training steps as the VQ-VAE;
# 4. `vqvae evaluate --samples N` on each (one shared classifier in OUT/classifier), plain
#    conditional sampling and with guidance scale 2; every metrics.json is kept as
#    OUT/<run>/metrics-<setting>.json.
# Budgets: VQ_STEPS (default 1500), PRIOR_STEPS (2000), SAMPLES (2000). A stage whose model
# already exists is skipped, so an interrupted measurement can be re-run. One thread per process:
# on a busy 2-core machine, two threads per process ran 2-15x slower (thread hand-offs).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SPEC=$1
OUT=$2
VQ_STEPS=${VQ_STEPS:-1500}
PRIOR_STEPS=${PRIOR_STEPS:-2000}
SAMPLES=${SAMPLES:-2000}
VQVAE=${VQVAE:-vqvae}
mkdir -p "$OUT"

NET="model.downsample=4 model.hidden=64 model.res_hidden=32 model.res_blocks=2"
TRAIN="train.steps=$VQ_STEPS train.batch_size=64 train.checkpoint_every=500"
PRIOR_TRAIN="prior_train.steps=$PRIOR_STEPS prior_train.batch_size=64 prior_train.checkpoint_every=500"

have() { [ -f "$1/model.safetensors" ]; }

have "$OUT/vqvae-pixelcnn/model" || $VQVAE train --data "$SPEC" --out "$OUT/vqvae-pixelcnn" \
  $NET $TRAIN model.quantizer.codebook_size=256 model.quantizer.dim=32
[ -d "$OUT/vqvae-transformer" ] || cp -r "$OUT/vqvae-pixelcnn" "$OUT/vqvae-transformer"

have "$OUT/vqvae-pixelcnn/prior/model" || $VQVAE train-prior "$OUT/vqvae-pixelcnn" $PRIOR_TRAIN \
  prior.channels=64 prior.layers=8 prior.kernel_size=5 prior.dropout=0.1 prior.label_dropout=0.1
have "$OUT/vqvae-transformer/prior/model" || $VQVAE train-prior "$OUT/vqvae-transformer" \
  $PRIOR_TRAIN prior.kind=transformer prior.dim=128 prior.heads=4 \
  prior.layers=4 prior.dropout=0.1 prior.label_dropout=0.1 \
  prior.max_rows=7 prior.max_cols=7

have "$OUT/vae/model" || $VQVAE train --data "$SPEC" --out "$OUT/vae" model.kind=vae $NET $TRAIN \
  model.latent_dim=32

for run in vqvae-pixelcnn vqvae-transformer vae; do
  $VQVAE evaluate "$OUT/$run" --samples "$SAMPLES" --classifier "$OUT/classifier"
  cp "$OUT/$run/metrics.json" "$OUT/$run/metrics-plain.json"
done
for run in vqvae-pixelcnn vqvae-transformer; do
  $VQVAE evaluate "$OUT/$run" --samples "$SAMPLES" --classifier "$OUT/classifier" \
    --guidance-scale 2
  cp "$OUT/$run/metrics.json" "$OUT/$run/metrics-guidance2.json"
done
