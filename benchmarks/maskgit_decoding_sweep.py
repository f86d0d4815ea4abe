"""How MaskGIT's decoding settings move its sample quality, on one trained run (issue #16).

    python benchmarks/maskgit_decoding_sweep.py RUN CLASSIFIER_DIR [--samples N] [--only NAME ...]

Draws ``--samples`` class-balanced samples of RUN's MaskGIT prior at each setting of
``SETTINGS`` (decoding steps, the confidence noise (``--confidence-noise``), temperature,
guidance scale; plain conditional sampling unless a guidance scale is given; ``--only``: those
settings by name) and scores them as ``vqvae evaluate --samples`` does (Fréchet
distance and class accuracy with the classifier in CLASSIFIER_DIR, seed 0). "random order":
noise so large that the confidences do not matter and, with one step per code, every code is
drawn from the network's exact conditional given the codes drawn before it. Writes
``benchmarks/results/maskgit_decoding_sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
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
    {"name": "noise 9, 12 steps", "noise": 9.0, "steps": 12},
    {"name": "noise 9, 16 steps", "noise": 9.0, "steps": 16},
    {"name": "noise 15", "noise": 15.0},
    {"name": "noise 15, 12 steps", "noise": 15.0, "steps": 12},
    {"name": "noise 25, 12 steps", "noise": 25.0, "steps": 12},
    {"name": "temperature 0.9", "temperature": 0.9},
    {"name": "guidance 1.1", "guidance": 1.1},
    {"name": "guidance 1.25, noise 9", "guidance": 1.25, "noise": 9.0},
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("classifier")
    parser.add_argument("--samples", type=int, default=2000)
    names = [s["name"] for s in SETTINGS]
    parser.add_argument("--only", nargs="+", choices=names, default=names, metavar="NAME")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "maskgit_decoding_sweep.json")
    )
    args = parser.parse_args(argv)
    run, _, family, data = _open(args.run, None)
    model = family.load_model(run)
    priors = family.load_priors(run, model)
    codes = math.prod(family.code_levels(model)[0].shape)  # positions of one map
    rows = []
    for setting in (s for s in SETTINGS if s["name"] in args.only):
        steps = setting.get("steps")
        options = SampleOptions(
            setting.get("temperature", 1.0),
            guidance_scale=setting.get("guidance"),
            steps=codes if steps == "codes" else steps,
            confidence_noise=setting.get("noise"),  # None: the prior's, 4.5 by default
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
    result = {
        "rows": rows,
        "settings": {
            "run": args.run,
            "samples": args.samples,
            "machine": cpu_name(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": shlex.join(["python", *sys.argv]),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
