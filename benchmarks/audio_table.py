"""Markdown table of audio runs' metrics.json files, one column per file (benchmarks/fsdd_audio.sh):

    python benchmarks/audio_table.py "16x=runs/fsdd/metrics.json" "8x=runs/fsdd-8x/metrics.json"

Each argument is LABEL=PATH; a key a run does not have prints as "—".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [
    ("bitrate of the code stream (bit/s)", "bitrate_bps", ".0f"),
    ("codes per second", "codes_per_second", ".0f"),
    ("SNR, test split (dB)", "snr_db", ".2f"),
    ("log-spectral distance, test split (dB)", "lsd_db", ".2f"),
    ("digit classifier on real test audio", "classifier_test_accuracy", ".3f"),
    ("digit classifier on reconstructions", "reconstruction_class_accuracy", ".3f"),
    ("intelligibility ratio (reconstructions / real)", "intelligibility_ratio", ".3f"),
    ("probe: digit from codes (chance 0.100)", "probe_digit_accuracy", ".3f"),
    ("probe: speaker from codes (chance 0.167)", "probe_speaker_accuracy", ".3f"),
    ("codebook usage (test)", "codebook_usage", ".3f"),
    ("code perplexity (test)", "perplexity", ".1f"),
    ("prior NLL, test (bits per code)", "prior_nll_bits_per_code", ".3f"),
    ("prior NLL, test (bit/s)", "prior_nll_bits_per_second", ".0f"),
    ("class-conditional samples recognised", "sample_class_accuracy", ".3f"),
    ("samples scored", "sample_count", "d"),
    ("guidance scale", "sample_guidance_scale", "g"),
    ("temperature", "sample_temperature", "g"),
]


def main(args: list[str]) -> None:
    labels, runs = [], []
    for arg in args:
        label, _, path = arg.partition("=")
        labels.append(label)
        runs.append(json.loads(Path(path).read_text(encoding="utf-8")))
    print("| metric (FSDD) | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(runs))
    for name, key, spec in ROWS:
        if not any(key in m for m in runs):
            continue
        cells = [format(m[key], spec) if key in m else "—" for m in runs]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
