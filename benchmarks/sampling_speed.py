"""Sampling speed of every prior: codes per second, cached vs full recomputation, in one run.

    python benchmarks/sampling_speed.py                      # 7×7, 16×16 and 32×32 grids
    python benchmarks/sampling_speed.py --grids 7 16 --n 4   # quicker

For each prior (gated PixelCNN, Transformer) and grid, draws ``--n`` maps with the cached
decoder and with full recomputation (same model, same seed: the same samples), and reports
codes/s = n·H·W / seconds and the ratio cached/full. Writes
``benchmarks/results/sampling_speed.json`` (rows: prior, method, grid, codes_per_s, ...).

"full" is the straightforward sampler: one forward pass per position — over the rows drawn so
far for the PixelCNN (rows below cannot influence the current position), over the whole prefix
for the Transformer. "cached": the PixelCNN computes each row's vertical stack once and each
position's horizontal stack once; the Transformer keeps every layer's keys and values.

Weights are random (speed does not depend on them); the model sizes are the ones written to the
JSON. Runs on one CPU thread by default: for single-position steps on a shared machine, thread
hand-offs cost more than the arithmetic, and both methods get the same setting.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vqvae.priors import GatedPixelCNN, PixelCNNConfig, TransformerPrior, TransformerPriorConfig

PIXELCNN = PixelCNNConfig(codebook_size=512, channels=64, layers=8, kernel_size=5)
TRANSFORMER = TransformerPriorConfig(
    codebook_size=512, dim=128, heads=4, layers=4, max_rows=32, max_cols=32
)


def time_sampling(model, n: int, side: int, cached: bool) -> tuple[float, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    codes = model.sample(n, (side, side), generator=g, cached=cached)
    return time.perf_counter() - start, codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[7, 16, 32])
    parser.add_argument("--n", type=int, default=8, help="maps drawn per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "sampling_speed.json")
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    priors = {
        "pixelcnn": GatedPixelCNN(PIXELCNN).eval(),
        "transformer": TransformerPrior(TRANSFORMER).eval(),
    }
    rows, ratios = [], []
    print(f"{'prior':12s} {'grid':>6s} {'cached codes/s':>15s} {'full codes/s':>13s} {'ratio':>7s}")
    for name, model in priors.items():
        for cached in (True, False):  # warm-up: first calls allocate and pick kernels
            model.sample(2, (4, 4), cached=cached)
        for side in args.grids:
            speed, samples = {}, {}
            for method in ("cached", "full"):
                seconds, samples[method] = time_sampling(model, args.n, side, method == "cached")
                speed[method] = args.n * side * side / seconds
                rows.append(
                    {
                        "prior": name,
                        "method": method,
                        "grid": [side, side],
                        "codes_per_s": round(speed[method], 1),
                        "seconds": round(seconds, 3),
                        "n": args.n,
                    }
                )
            ratio = speed["cached"] / speed["full"]
            same = bool(torch.equal(samples["cached"], samples["full"]))
            ratios.append(
                {
                    "prior": name,
                    "grid": [side, side],
                    "cached_over_full": round(ratio, 2),
                    "same_samples": same,
                }
            )
            print(
                f"{name:12s} {f'{side}x{side}':>6s} {speed['cached']:15.0f} "
                f"{speed['full']:13.0f} {ratio:6.1f}x" + ("" if same else "  (samples differ)"),
                flush=True,
            )
    result = {
        "rows": rows,
        "ratios": ratios,
        "settings": {
            "n": args.n,
            "threads": args.threads,
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "pixelcnn": vars(PIXELCNN),
            "transformer": vars(TRANSFORMER),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
