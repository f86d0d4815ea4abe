"""Collect the metrics-<setting>.json files of a sample-quality measurement into one file.

    python benchmarks/collect_quality.py OUT benchmarks/results/sample_quality_mnist.json

Each row: run folder name, setting (plain or guidance2), and the metrics the table reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = [
    "psnr",
    "prior_nll_bits_per_code",
    "prior_nll_bits_per_dim",
    "prior_top_nll_bits_per_code",
    "prior_bottom_nll_bits_per_code",
    # a MaskGIT prior has no NLL: bits per masked code with 25/50/75/100% of each map masked
    "prior_masked_bits_per_code_at_25",
    "prior_masked_bits_per_code_at_50",
    "prior_masked_bits_per_code_at_75",
    "prior_masked_bits_per_code_at_100",
    "sample_frechet",
    "real_frechet",
    "sample_class_accuracy",
    "classifier_test_accuracy",
    "sample_count",
    "sample_guidance_scale",
    "data",
]


def main(argv: list[str]) -> int:
    out_dir, dest = Path(argv[0]), Path(argv[1])
    rows = []
    for path in sorted(out_dir.glob("*/metrics-*.json")):
        metrics = json.loads(path.read_text(encoding="utf-8"))
        setting = path.stem.removeprefix("metrics-")
        rows.append(
            {
                "run": path.parent.name,
                "setting": setting,
                **{k: metrics[k] for k in KEYS if k in metrics},
            }
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
