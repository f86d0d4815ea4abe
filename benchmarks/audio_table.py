"""Markdown table of audio runs' metrics.json files (benchmarks/fsdd_audio.sh):

    python benchmarks/audio_table.py PLAIN.json GUIDED.json OTHER.json

The first file is the run with a prior (plain sampling), the second the same run sampled with
classifier-free guidance, the third a run without a prior; missing keys print as "—".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(m: dict, key: str, spec: str = ".3f") -> str:
    return format(m[key], spec) if key in m else "—"


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    plain, guided, other = runs
    header = [
        f"{plain['codes_per_second']:.0f} codes/s, K = {plain['codebook_size']}",
        f"{other['codes_per_second']:.0f} codes/s, K = {other['codebook_size']}",
    ]
    rows = [
        ("bitrate of the code stream (bit/s)", "bitrate_bps", ".0f"),
        ("SNR, test split (dB)", "snr_db", ".2f"),
        ("log-spectral distance, test split (dB)", "lsd_db", ".2f"),
        ("digit classifier on real test audio", "classifier_test_accuracy", ".3f"),
        ("digit classifier on reconstructions", "reconstruction_class_accuracy", ".3f"),
        ("intelligibility ratio (reconstructions / real)", "intelligibility_ratio", ".3f"),
        ("probe: digit from codes", "probe_digit_accuracy", ".3f"),
        ("probe: digit, chance", "probe_digit_chance", ".3f"),
        ("probe: speaker from codes", "probe_speaker_accuracy", ".3f"),
        ("probe: speaker, chance", "probe_speaker_chance", ".3f"),
        ("codebook usage (test)", "codebook_usage", ".3f"),
        ("code perplexity (test)", "perplexity", ".1f"),
        ("prior NLL (bits per code, test)", "prior_nll_bits_per_code", ".3f"),
        ("prior NLL (bit/s, test)", "prior_nll_bits_per_second", ".0f"),
        ("samples recognised as the requested digit", "sample_class_accuracy", ".3f"),
    ]
    print(f"| metric (FSDD) | {header[0]} | {header[1]} |")
    print("|---|---|---|")
    for name, key, spec in rows:
        print(f"| {name} | {fmt(plain, key, spec)} | {fmt(other, key, spec)} |")
    print(f"| samples recognised, guidance scale 2 | {fmt(guided, 'sample_class_accuracy')} | — |")
    print(f"\nSamples per setting: {plain.get('sample_count', '—')}.")


if __name__ == "__main__":
    main(sys.argv[1:])
