"""How MaskGIT's decoding settings move its sample quality, on one trained run (issue #16).

    python benchmarks/maskgit_decoding_sweep.py RUN CLASSIFIER_DIR [--samples 2000]

Draws ``--samples`` class-balanced samples of RUN's MaskGIT prior at each setting of
``SETTINGS`` (decoding steps, the confidence noise ``prior.confidence_noise``, temperature;
plain conditional sampling) and scores them as ``vqvae evaluate --samples`` does (Fréchet
distance and class accuracy with the classifier in CLASSIFIER_DIR, seed 0). "random order":
noise so large that the confidences do not matter and, with one step per code, every code is
drawn from the network's exact conditional given the codes drawn before it. Writes
``benchmarks/results/maskgit_decoding_sweep.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

from vqvae.pipeline.families import SampleOptions
from vqvae.pipeline.stages import _open
from vqvae.threads import cpu_name

SETTINGS = [
    {"name": "default (8 steps, noise 4.5)"},
    {"name": "12 steps", "steps": 12},
    {"name": "24 steps", "steps": 24},
    {"name": "noise 2", "noise": 2.0},
    {"name": "noise 9", "noise": 9.0},
    {"name": "temperature 1.1", "temperature": 1.1},
    {"name": "random order, one code a step", "noise": 1000.0, "steps": "codes"},
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("classifier")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "maskgit_decoding_sweep.json")
    )
    args = parser.parse_args(argv)
    run, _, family, data = _open(args.run, None)
    model = family.load_model(run)
    priors = family.load_priors(run, model)
    prior = priors[0]
    base = prior.config
    codes = math.prod(family.code_levels(model)[0].shape)  # positions of one map
    rows = []
    for setting in SETTINGS:
        prior.config = dataclasses.replace(base, confidence_noise=setting.get("noise", 4.5))
        steps = setting.get("steps")
        options = SampleOptions(
            setting.get("temperature", 1.0), steps=codes if steps == "codes" else steps
        )
        metrics = family.sample_quality(
            run, model, priors, data, args.samples, args.classifier, options, 0
        )
        row = {
            "setting": setting["name"],
            "sample_frechet": round(metrics["sample_frechet"], 2),
            "sample_class_accuracy": round(metrics["sample_class_accuracy"], 4),
        }
        rows.append(row)
        print(row, flush=True)
    prior.config = base
    result = {
        "rows": rows,
        "settings": {
            "run": args.run,
            "samples": args.samples,
            "machine": cpu_name(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python benchmarks/maskgit_decoding_sweep.py RUN CLASSIFIER_DIR",
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
