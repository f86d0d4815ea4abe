#!/usr/bin/env bash
# Sample quality of the two-stage pipeline against a Gaussian VAE, on one dataset, in one go:
#
#   benchmarks/sample_quality.sh mnist:../shared/data/mnist runs/quality-mnist
#   benchmarks/sample_quality.sh fashion-mnist:../shared/data/fashion-mnist runs/quality-fashion
#
# 1. a VQ-VAE (7×7 codes, K = 256), copied into one run per prior — or, with BASE_RUN=DIR, an
#    already trained VQ-VAE run copied instead (its codes are 7×7 too);
# 2. a class-conditional prior of each kind of PRIORS (default "pixelcnn transformer maskgit":
#    a gated PixelCNN, a KV-cached Transformer, a MaskGIT prior of the Transformer's size), all
#    with label dropout 0.1 (so classifier-free guidance is available) and the same step budget;
# 3. a Gaussian VAE with the same encoder/decoder, latent grid and training steps as the VQ-VAE
#    (VAE=0 skips it);
# 4. `vqvae evaluate --samples N` on each (one shared classifier in OUT/classifier), plain
#    conditional sampling and with guidance scale 2; every metrics.json is kept as
#    OUT/<run>/metrics-<setting>.json.
# Budgets: VQ_STEPS (default 1500), PRIOR_STEPS (2000), SAMPLES (2000). A stage whose model
# already exists is skipped, so an interrupted measurement can be re-run. One thread per process:
# on a busy 2-core machine, two threads per process ran 2-15x slower (thread hand-offs).
# VQVAE="flock /tmp/vqvae-cpu.lock vqvae" runs each stage under the shared machine's lock.
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

PRIORS=${PRIORS:-pixelcnn transformer maskgit}
# The Transformer's and MaskGIT's size; TRANSFORMER_SIZE="" leaves it to train-prior's fit.
TRANSFORMER_SIZE=${TRANSFORMER_SIZE-prior.dim=128 prior.heads=4 prior.layers=4}
VAE=${VAE:-1}
FIRST=vqvae-${PRIORS%% *}
if [ -n "${BASE_RUN:-}" ]; then
  [ -d "$OUT/$FIRST" ] || cp -r "$BASE_RUN" "$OUT/$FIRST"
else
  have "$OUT/$FIRST/model" || $VQVAE train --data "$SPEC" --out "$OUT/$FIRST" \
    $NET $TRAIN model.quantizer.codebook_size=256 model.quantizer.dim=32
fi

for prior in $PRIORS; do
  run="$OUT/vqvae-$prior"
  [ -d "$run" ] || cp -r "$OUT/$FIRST" "$run"
  case $prior in
    pixelcnn) ARGS="prior.kind=pixelcnn prior.channels=64 prior.layers=8 prior.kernel_size=5" ;;
    transformer | maskgit)
      ARGS="prior.kind=$prior $TRANSFORMER_SIZE prior.max_rows=7 prior.max_cols=7" ;;
    *) echo "unknown prior $prior" >&2; exit 2 ;;
  esac
  have "$run/prior/model" && grep -q "\"kind\": \"$prior\"" "$run/prior/model/config.json" ||
    $VQVAE train-prior "$run" $PRIOR_TRAIN $ARGS prior.dropout=0.1 prior.label_dropout=0.1
done

RUNS=""
for prior in $PRIORS; do RUNS="$RUNS vqvae-$prior"; done
if [ "$VAE" = 1 ]; then
  have "$OUT/vae/model" || $VQVAE train --data "$SPEC" --out "$OUT/vae" model.kind=vae $NET \
    $TRAIN model.latent_dim=32
  RUNS="$RUNS vae"
fi

for run in $RUNS; do
  [ -f "$OUT/$run/metrics-plain.json" ] ||
    { $VQVAE evaluate "$OUT/$run" --samples "$SAMPLES" --classifier "$OUT/classifier" &&
      cp "$OUT/$run/metrics.json" "$OUT/$run/metrics-plain.json"; }
done
for prior in $PRIORS; do
  run=vqvae-$prior
  [ -f "$OUT/$run/metrics-guidance2.json" ] ||
    { $VQVAE evaluate "$OUT/$run" --samples "$SAMPLES" --classifier "$OUT/classifier" \
      --guidance-scale 2 && cp "$OUT/$run/metrics.json" "$OUT/$run/metrics-guidance2.json"; }
done
