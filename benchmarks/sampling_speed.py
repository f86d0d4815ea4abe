"""Sampling speed of every prior: codes per second, cached vs full recomputation, and the
masked MaskGIT prior's parallel decoding against them at batch 1 and batch 100, in one run.

    python benchmarks/sampling_speed.py                                 # 7×7 and 16×16 grids
    python benchmarks/sampling_speed.py --grids 7 16 32 --n 4           # 32×32 too (slow)

1. For each autoregressive prior (gated PixelCNN, Transformer) and grid, draws ``--n`` maps in
   one batch with the cached decoder and with full recomputation (same model, same seed: the
   same samples), and reports codes/s = n·H·W / seconds and the ratio cached/full.
2. For each grid and batch size of ``--batches`` (default 1, 10, 100): the cached PixelCNN,
   the KV-cached Transformer and MaskGIT (``MASKGIT_STEPS`` network passes per map; the first
   map of a measurement pays for the blank map's pass, which MaskGIT keeps per class). Batch 1
   is the latency a user waits for one image (``--latency-maps`` maps drawn one at a time);
   batch 100 the throughput of a sample grid. Each figure is the median of ``--repeats``
   measurements. The Transformer and MaskGIT have the same network at each grid: the size
   ``train-prior`` fits to that grid (K = 512, 60,000 training maps, as MNIST's:
   ``transformer.fitted_sizes``), and, where that differs from it, also the fixed size below.
   The MaskGIT/Transformer ratio of images/s says where the crossover lies: a MaskGIT step is
   a pass over every position of the map, a cached step over one, so once a batch fills the
   CPU the cached prior's fewer multiply-adds win.

Writes ``benchmarks/results/sampling_speed.json`` (rows: prior, method, grid, batch,
codes_per_s, images_per_s, seconds, maps).

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
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from vqvae.priors import (
    GatedPixelCNN,
    MaskGITPrior,
    MaskGITPriorConfig,
    PixelCNNConfig,
    TransformerPrior,
    TransformerPriorConfig,
)
from vqvae.priors.transformer import fitted_sizes
from vqvae.threads import cpu_name

PIXELCNN = PixelCNNConfig(codebook_size=512, channels=64, layers=8, kernel_size=5)
TRANSFORMER = TransformerPriorConfig(
    codebook_size=512, dim=128, heads=4, layers=4, max_rows=32, max_cols=32
)
MASKGIT_STEPS = 8  # the prior's default decode_steps
# The same network as TRANSFORMER, bidirectional, plus the mask token.
MASKGIT = MaskGITPriorConfig(
    codebook_size=512, dim=128, heads=4, layers=4, max_rows=32, max_cols=32,
    decode_steps=MASKGIT_STEPS,
)  # fmt: skip


def time_sampling(model, n: int, side: int, cached: bool) -> tuple[float, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    codes = model.sample(n, (side, side), generator=g, cached=cached)
    return time.perf_counter() - start, codes


TRAIN_MAPS = 60_000  # the training maps ``fitted_sizes`` sizes the networks for (MNIST's)


def time_batches(model, side: int, batch: int, maps: int, repeats: int) -> float:
    """Median seconds to draw ``maps`` maps in calls of ``batch`` maps. MaskGIT starts each
    measurement without the blank maps' logits it keeps."""
    times = []
    for _ in range(repeats):
        if isinstance(model, MaskGITPrior):
            model._blank_weights = None  # forget the kept logits: pay the first pass again
        g = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for i in range(0, maps, batch):
            model.sample(min(batch, maps - i), (side, side), generator=g)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def networks(side: int) -> list[tuple[str, TransformerPriorConfig, MaskGITPriorConfig]]:
    """The Transformer and MaskGIT networks compared at a ``side``×``side`` grid: the fitted
    size and, where it differs, the fixed one."""
    sizes = fitted_sizes((side, side), 512, train_items=TRAIN_MAPS)
    out = [
        (
            "fitted",
            dataclasses.replace(TRANSFORMER, **sizes),
            dataclasses.replace(MASKGIT, **sizes),
        )
    ]
    if dataclasses.replace(TRANSFORMER, **sizes) != TRANSFORMER:
        out.append(("fixed", TRANSFORMER, MASKGIT))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[7, 16])
    parser.add_argument("--n", type=int, default=8, help="maps drawn per cached/full measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument(
        "--latency-maps", type=int, default=10, help="maps drawn one at a time for batch 1"
    )
    parser.add_argument("--repeats", type=int, default=3, help="batch comparison: median of")
    parser.add_argument("--threads", type=int, default=1, help="for the cached/full comparison")
    parser.add_argument(
        "--batch-threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="thread counts of the batch comparison (each prior is reported at each)",
    )
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
                        "batch": args.n,
                        "codes_per_s": round(speed[method], 1),
                        "images_per_s": round(args.n / seconds, 2),
                        "seconds": round(seconds, 3),
                        "maps": args.n,
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
    batch_rows, crossover = batch_comparison(priors, args)
    rows += batch_rows
    result = {
        "rows": rows,
        "ratios": ratios,
        "maskgit_over_transformer": crossover,
        "settings": {
            "n": args.n,
            "threads": args.threads,
            "batch_threads": args.batch_threads,
            "torch": torch.__version__,
            "machine": cpu_name(),
            "pixelcnn": vars(PIXELCNN),
            "transformer": vars(TRANSFORMER),
            "maskgit": vars(MASKGIT),
            "batches": args.batches,
            "latency_maps": args.latency_maps,
            "repeats": args.repeats,
            "networks": {
                f"{side}x{side} {kind}": {"dim": t.dim, "heads": t.heads, "layers": t.layers}
                for side in args.grids
                for kind, t, _ in networks(side)
            },
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python benchmarks/sampling_speed.py",
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def batch_comparison(priors: dict, args) -> tuple[list[dict], list[dict]]:
    """Cached PixelCNN, KV-cached Transformer and MaskGIT at each grid, network size, batch
    size and thread count: rows, and MaskGIT's images/s over the Transformer's (each at the
    same thread count, and each at its best)."""
    rows, ratios = [], []
    print(f"\n{'grid':>6s} {'net':>6s} {'batch':>5s} {'threads':>7s} " + " ".join(
        f"{p + ' img/s':>17s}" for p in ("pixelcnn", "transformer", "maskgit")
    ))  # fmt: skip
    for side in args.grids:
        for kind, transformer, maskgit in networks(side):
            models = {
                "pixelcnn": priors["pixelcnn"],
                "transformer": TransformerPrior(transformer).eval(),
                "maskgit": MaskGITPrior(maskgit).eval(),
            }
            for model in models.values():
                model.sample(2, (4, 4))  # warm-up
            net = {"dim": transformer.dim, "heads": transformer.heads, "layers": transformer.layers}
            for batch in args.batches:
                rows_, ratios_ = compare_at(models, side, batch, kind, net, args)
                rows += rows_
                ratios += ratios_
    torch.set_num_threads(args.threads)
    return rows, ratios


def compare_at(models: dict, side: int, batch: int, kind: str, net: dict, args):
    maps = args.latency_maps if batch == 1 else batch
    best: dict[str, float] = {}
    rows, ratios = [], []
    where = {"grid": [side, side], "batch": batch, "network": kind, **net}
    for threads in args.batch_threads:
        torch.set_num_threads(threads)
        speed = {}
        for name, model in models.items():
            seconds = time_batches(model, side, batch, maps, args.repeats)
            speed[name] = maps / seconds
            best[name] = max(best.get(name, 0.0), speed[name])
            method = f"parallel_{MASKGIT_STEPS}_steps" if name == "maskgit" else "cached"
            rows.append(
                {
                    "prior": name,
                    "method": method,
                    **where,
                    "codes_per_s": round(maps * side * side / seconds, 1),
                    "images_per_s": round(speed[name], 2),
                    "threads": threads,
                    "seconds": round(seconds, 3),
                    "maps": maps,
                }
            )
        ratio = speed["maskgit"] / speed["transformer"]
        ratios.append({**where, "threads": threads, "images_per_s_ratio": round(ratio, 2)})
        print(
            f"{f'{side}x{side}':>6s} {kind:>6s} {batch:5d} {threads:7d} "
            + " ".join(f"{speed[p]:17.1f}" for p in models)
            + f"   maskgit/transformer {ratio:.2f}x",
            flush=True,
        )
    ratio = best["maskgit"] / best["transformer"]
    ratios.append({**where, "threads": "best of each", "images_per_s_ratio": round(ratio, 2)})
    print(f"{'':>20s} {'best':>7s} maskgit/transformer {ratio:.2f}x", flush=True)
    return rows, ratios


if __name__ == "__main__":
    raise SystemExit(main())
