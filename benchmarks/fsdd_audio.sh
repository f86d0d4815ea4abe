#!/usr/bin/env bash
# Audio on the Free Spoken Digit Dataset, the whole two-stage pipeline in one go:
#
#   benchmarks/fsdd_audio.sh ../shared/data/fsdd/recordings benchmarks/runs/fsdd
#
# 1. the 1D VQ-VAE of configs/fsdd.toml (16× downsampling, K = 512: 500 codes/s, 4500 bit/s);
# 2. its class-conditional Transformer prior over the 384-code sequences (same config file);
# 3. `vqvae sample`: 4 clips of every digit as WAVs + spectrograms.png in OUT/samples/;
# 4. `vqvae evaluate --samples SAMPLES`: SNR, log-spectral distance, bitrate, intelligibility
#    (a log-mel digit classifier trained on the real training audio, in OUT/classifier/), code
#    probes, prior NLL and the classifier's accuracy on class-conditional samples;
#    OUT/metrics.json is copied to benchmarks/results/fsdd_audio.json and summarised as a
#    markdown table in benchmarks/results/fsdd_audio.md.
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
$VQVAE evaluate "$OUT" --samples "$SAMPLES"

mkdir -p "$HERE/results"
cp "$OUT/metrics.json" "$HERE/results/fsdd_audio.json"
python3 - "$OUT/metrics.json" > "$HERE/results/fsdd_audio.md" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
rows = [
    ("bitrate of the code stream", f"{m['bitrate_bps']:.0f} bit/s ({m['codes_per_second']:.0f} codes/s × log2 {m['codebook_size']})"),
    ("SNR (test, real samples)", f"{m['snr_db']:.2f} dB"),
    ("log-spectral distance (test)", f"{m['lsd_db']:.2f} dB"),
    ("classifier accuracy, real test audio", f"{m['classifier_test_accuracy']:.3f}"),
    ("classifier accuracy, reconstructions", f"{m['reconstruction_class_accuracy']:.3f}"),
    ("intelligibility ratio (recon / real)", f"{m['intelligibility_ratio']:.3f}"),
    ("class-conditional samples recognised", f"{m['sample_class_accuracy']:.3f} ({m['sample_count']} samples)"),
    ("probe: digit from codes", f"{m['probe_digit_accuracy']:.3f} (chance {m['probe_digit_chance']:.3f})"),
    ("probe: speaker from codes", f"{m['probe_speaker_accuracy']:.3f} (chance {m['probe_speaker_chance']:.3f})"),
    ("prior NLL (test)", f"{m['prior_nll_bits_per_code']:.3f} bits/code = {m['prior_nll_bits_per_second']:.0f} bit/s (uniform {m['prior_uniform_bits_per_code']:.0f} bits/code)"),
    ("codebook usage / perplexity (test)", f"{m['codebook_usage']:.3f} / {m['perplexity']:.1f}"),
]
print("| metric | value |\n|---|---|")
for name, value in rows:
    print(f"| {name} | {value} |")
PY
cat "$HERE/results/fsdd_audio.md"
