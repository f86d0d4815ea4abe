"""Codebook ablation: which quantizer keeps its codebook alive, and at what reconstruction cost.

Trains the same VQ-VAE (VQVAEConfig defaults: 28×28 -> 7×7 code grid, D = 64) with the same
step budget, batch, learning-rate schedule and seed for every quantizer variant and codebook
size K on Fashion-MNIST, then measures on the test split: PSNR, codebook usage (fraction of
codes used), perplexity of the code histogram over the whole split, and dead codes.

    python benchmarks/codebook_ablation.py --threads 1            # the grid: K ∈ {512, 4096}
    python benchmarks/codebook_ablation.py --check-default --threads 1   # K ∈ {1024, 8192}

The grid writes benchmarks/results/codebook_ablation.json (a list of rows: variant, K, psnr,
usage, perplexity, dead_codes, default) and a Markdown table next to it; ``--check-default``
compares the project's default quantizer with plain VQ at K = 1024 and 8192 and writes
benchmarks/results/codebook_default_check.json. Results are written after every run, so an
interrupted benchmark keeps what it measured, and merged into what the file already holds: a
run of some variants or sizes (``--variants``, ``--ks``) replaces only its own rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from vqvae.data import load_data
from vqvae.files import atomic_write_text
from vqvae.models import VQVAE, VQVAEConfig
from vqvae.pipeline.stages import reconstruction_metrics
from vqvae.quantizers import QuantizerConfig
from vqvae.training import ShuffledBatches, TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"
ROW_KEYS = ("variant", "K", "psnr", "usage", "perplexity", "dead_codes", "default")
NO_REMEDIES = {"kmeans_init": False, "dead_code_threshold": 0.0}

# Quantizer options per variant (codebook_size is set per run). Each trick on its own is applied
# to plain gradient VQ without k-means or resets, so its own effect on collapse shows.
VARIANTS: dict[str, dict] = {
    "vq": {"kind": "vq", **NO_REMEDIES},  # plain gradient VQ, no remedies
    "vq+kmeans+reset": {"kind": "vq"},
    "ema": {"kind": "ema", **NO_REMEDIES},
    "ema+kmeans+reset": {"kind": "ema"},
    "cosine": {"kind": "cosine", **NO_REMEDIES},
    "lowdim": {"kind": "vq", "lookup_dim": 8, **NO_REMEDIES},
    "rotation": {"kind": "vq", "gradient": "rotation", **NO_REMEDIES},
    "ema+kmeans+reset+rotation": {"kind": "ema", "gradient": "rotation"},
    "residual": {"kind": "residual", "levels": 2},  # 2 EMA levels with k-means + reset
    "fsq": {"kind": "fsq"},  # levels derived from K: 512 -> 8,8,8; 4096 -> 8,8,8,8
}


def quantizer_config(variant: str, k: int) -> QuantizerConfig:
    return QuantizerConfig(codebook_size=k, **VARIANTS[variant])


def is_default(config: QuantizerConfig) -> bool:
    """True for the variant whose options are the library's QuantizerConfig defaults."""
    return config == QuantizerConfig(codebook_size=config.codebook_size)


def run_one(variant: str, k: int, data, args) -> dict:
    q = quantizer_config(variant, k)
    variance = float(data.train.images.var())
    torch.manual_seed(args.seed)  # the same initial weights outside the quantizer
    model = VQVAE(VQVAEConfig(in_channels=1, image_size=28, data_variance=variance, quantizer=q))
    batches = ShuffledBatches(
        (torch.from_numpy(data.train.images), None), args.batch_size, seed=args.seed
    )
    train = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        log_every=max(1, args.steps // 10),
        checkpoint_every=0,
    )
    start = time.perf_counter()
    fit(model, batches, train, desc=f"{variant} K={k}", show_progress=args.progress)
    seconds = time.perf_counter() - start
    metrics = reconstruction_metrics(model, data.test)
    levels = model.quantizer.index_levels
    row = {
        "variant": variant,
        "K": k,
        "psnr": round(metrics["psnr"], 3),
        "usage": round(metrics["codebook_usage"], 4),
        "perplexity": round(metrics["perplexity"], 1),
        "dead_codes": int(metrics["dead_codes"]),
        "default": is_default(q),
    }
    extra = {
        "bits_per_position": max(1, levels) * math.log2(model.quantizer.codebook_size),
        "train_seconds": round(seconds, 1),
        "level_stats": {key: v for key, v in metrics.items() if key.startswith("level")},
    }
    return row, extra


def markdown(rows: list[dict], extras: list[dict]) -> str:
    lines = [
        "| variant | K | bits/position | test PSNR (dB) | usage | perplexity | dead codes "
        "| train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row, extra in zip(rows, extras, strict=True):
        name = f"**{row['variant']}** (default)" if row["default"] else row["variant"]
        lines.append(
            f"| {name} | {row['K']} | {extra['bits_per_position']:.1f} | {row['psnr']:.2f} "
            f"| {row['usage']:.3f} | {row['perplexity']:.1f} | {row['dead_codes']} "
            f"| {extra['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def previous(out: Path) -> dict[tuple[str, int], dict]:
    """Rows (with their details) an earlier run wrote to ``out``, keyed by (variant, K)."""
    details = out.with_suffix(".details.json")
    if not details.is_file():
        return {}
    return {(d["variant"], d["K"]): d for d in json.loads(details.read_text())}


def write(measured: dict[tuple[str, int], dict], out: Path) -> tuple[list[dict], list[dict]]:
    """Write every measured run, ordered by K and then by VARIANTS, as the rows, the details
    and the Markdown table; returns (rows, extras) in that order."""
    order = sorted(measured, key=lambda key: (key[1], list(VARIANTS).index(key[0])))
    details = [measured[key] for key in order]
    rows = [{name: d[name] for name in ROW_KEYS} for d in details]
    extras = [{name: v for name, v in d.items() if name not in ROW_KEYS} for d in details]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".details.json"), json.dumps(details, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(rows, extras))
    return rows, extras


def check_default(rows: list[dict]) -> list[str]:
    """The must-show criteria: default usage ≥ 0.95 (K = 1024) and ≥ 0.8 (K = 8192), and test
    PSNR no worse than plain VQ at the same K."""
    verdicts = []
    by = {(r["variant"], r["K"]): r for r in rows}
    default = next(r["variant"] for r in rows if r["default"])
    for k, need in ((1024, 0.95), (8192, 0.8)):
        d, plain = by.get((default, k)), by.get(("vq", k))
        if d is None or plain is None:
            continue
        ok_usage = d["usage"] >= need
        ok_psnr = d["psnr"] >= plain["psnr"]
        verdicts.append(
            f"K={k}: default usage {d['usage']:.3f} (need >= {need}) "
            f"{'PASS' if ok_usage else 'FAIL'}; PSNR {d['psnr']:.2f} vs plain VQ "
            f"{plain['psnr']:.2f} {'PASS' if ok_psnr else 'FAIL'}"
        )
    return verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion-mnist:../shared/data/fashion-mnist")
    p.add_argument("--steps", type=int, default=1000, help="training steps per run (same for all)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--ks", type=int, nargs="+", help="codebook sizes (default 512 4096)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all")
    p.add_argument(
        "--check-default",
        action="store_true",
        help="must-show check: the default quantizer vs plain VQ at K = 1024 and 8192",
    )
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (1 is fastest on a busy machine)")
    p.add_argument("--progress", action="store_true", help="show a progress bar per run")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.check_default:
        default = next(v for v in VARIANTS if is_default(quantizer_config(v, 1024)))
        variants = args.variants or ["vq", default]
        ks = args.ks or [1024, 8192]
        out = args.out or RESULTS / "codebook_default_check.json"
    else:
        variants = args.variants or list(VARIANTS)
        ks = args.ks or [512, 4096]
        out = args.out or RESULTS / "codebook_ablation.json"

    data = load_data(args.data)
    print(
        f"# {data.spec}: {len(data.train)} train / {len(data.test)} test, {args.steps} steps of "
        f"{args.batch_size}, seed {args.seed}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    measured = previous(out)
    for k in ks:
        for variant in variants:
            row, extra = run_one(variant, k, data, args)
            measured[variant, k] = {**row, **extra}
            print(json.dumps(measured[variant, k]), flush=True)
            rows, extras = write(measured, out)
    print()
    print(markdown(rows, extras))
    for line in check_default(rows):
        print(line)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
