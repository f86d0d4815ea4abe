"""Codebook ablation: which quantizer keeps its codebook alive, and at what reconstruction cost.

Trains the same VQ-VAE with the same step budget, batch, learning-rate schedule and seed for
every quantizer variant and codebook size K, then measures on the test split: PSNR, codebook
usage (fraction of codes used), perplexity of the code histogram over the whole split, and dead
codes. The model takes its channels and image size from the data (downsample 4: 28×28 -> 7×7,
32×32 -> 8×8 code grid; D = 64); ``--hidden`` sets its encoder/decoder channels (default 128).

Fashion-MNIST (28×28 grey), the default data:

    python benchmarks/codebook_ablation.py --threads 1            # the grid: K ∈ {512, 4096}
    python benchmarks/codebook_ablation.py --check-default --threads 1   # K ∈ {1024, 8192}

The grid writes benchmarks/results/codebook_ablation.json (a list of rows: variant, K, psnr,
usage, perplexity, dead_codes, default) and a Markdown table next to it; ``--check-default``
compares the project's default quantizer with plain VQ at K = 1024 and 8192 and writes
benchmarks/results/codebook_default_check.json.

CIFAR-10 (32×32 RGB; issue #14: does the codebook stay alive and keep paying off up to 2^16
codes?):

    python benchmarks/codebook_ablation.py --data folder:../shared/data/cifar10-jpeg \
        --hidden 64 --batch-size 64 --steps 1000 --ks 1024 4096 16384 65536 \
        --variants default vq lfq bsq simvq fsq --threads 1
    python benchmarks/codebook_ablation.py --data folder:../shared/data/cifar10-jpeg \
        --hidden 64 --batch-size 64 --steps 1000 --ks 262144 --variants lfq bsq --threads 1

The CIFAR-10 grid (chosen by the data spec, or ``--grid cifar10``) writes
benchmarks/results/codebook_ablation_cifar10.json (rows: variant, K, psnr, ssim, usage,
perplexity, dead_codes, seconds = training CPU seconds, default), its .details.json and .md, a plot
codebook_ablation_cifar10.png (usage and test PSNR against log2 K, one line per variant) and
prints the verdict of #14's must-show 1: usage ≥ 0.90 at K = 2^16 and PSNR(2^16) - PSNR(2^10)
≥ 1 dB. Its variants: ``default`` (the library's QuantizerConfig defaults: EMA, k-means init,
dead-code reset), plain ``vq`` (no remedies), and the kinds ``lfq``, ``bsq``, ``simvq`` and
``fsq`` with the library's defaults for their other options. A (variant, K) the kind cannot
build (LFQ/BSQ need a power of two; FSQ a K with a level set) is skipped with its reason; a
run whose training diverges (non-finite loss or gradient) is reported and leaves no row, the
rest of the grid still runs, and the script then exits with status 1.

Results are written after every run, so an interrupted benchmark keeps what it measured, and
merged into what the file already holds: a run of some variants or sizes (``--variants``,
``--ks``) replaces only its own rows.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vqvae.data import load_data
from vqvae.errors import ConfigError
from vqvae.files import atomic_path, atomic_write_text
from vqvae.models import VQVAE, VQVAEConfig
from vqvae.pipeline.stages import reconstruction_metrics
from vqvae.quantizers import QuantizerConfig
from vqvae.training import ShuffledBatches, TrainConfig, TrainingDiverged, fit

RESULTS = Path(__file__).resolve().parent / "results"
ROW_KEYS = ("variant", "K", "psnr", "usage", "perplexity", "dead_codes", "default")
# The CIFAR-10 rows (issue #14's keys): SSIM and the training's CPU seconds as well.
CIFAR_ROW_KEYS = (
    "variant",
    "K",
    "psnr",
    "ssim",
    "usage",
    "perplexity",
    "dead_codes",
    "seconds",
    "default",
)
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
    # The CIFAR-10 grid's (#14): the library's defaults, and the kinds built against collapse
    # with the library's defaults for their other options.
    "default": {},  # QuantizerConfig() as it stands: EMA + k-means init + dead-code reset
    "lfq": {"kind": "lfq"},  # K = 2^bits sign channels, entropy penalty
    "bsq": {"kind": "bsq"},  # LFQ on the unit sphere
    "simvq": {"kind": "simvq"},  # frozen basis × learned map (k-means + reset by default)
}


@dataclass(frozen=True)
class Grid:
    """What a run measures unless told: its variants and sizes, where it writes, its rows."""

    name: str
    variants: tuple[str, ...]
    ks: tuple[int, ...]
    out: str  # file name under benchmarks/results
    row_keys: tuple[str, ...]


GRIDS = {
    "fashion": Grid(
        "fashion",
        ("vq", "vq+kmeans+reset", "ema", "ema+kmeans+reset", "cosine", "lowdim", "rotation")
        + ("ema+kmeans+reset+rotation", "residual", "fsq"),
        (512, 4096),
        "codebook_ablation.json",
        ROW_KEYS,
    ),
    "cifar10": Grid(
        "cifar10",
        ("default", "vq", "lfq", "bsq", "simvq", "fsq"),
        (1024, 4096, 16384, 65536),
        "codebook_ablation_cifar10.json",
        CIFAR_ROW_KEYS,
    ),
}
# #14 must-show 1: at 2^16 codes the codebook is used (>= 90%) and the extra codes pay off
# (>= 1 dB over 2^10).
SMALL_K, LARGE_K, NEED_USAGE, NEED_GAIN_DB = 2**10, 2**16, 0.90, 1.0


def is_cifar10(spec: str) -> bool:
    """A spec naming CIFAR-10 (``folder:.../cifar10-jpeg``, ``cifar:.../cifar-10-...``)."""
    scheme, _, path = spec.partition(":")
    name = Path(path.rstrip("/")).name.lower()
    return scheme in ("folder", "cifar") and re.match(r"cifar-?10(?!\d)", name) is not None


def quantizer_config(variant: str, k: int) -> QuantizerConfig:
    return QuantizerConfig(codebook_size=k, **VARIANTS[variant])


def unsupported(variant: str, k: int) -> str | None:
    """Why ``variant`` cannot be built with K = ``k`` (None when it can)."""
    try:
        quantizer_config(variant, k)
    except ConfigError as err:
        return str(err)
    return None


def is_default(config: QuantizerConfig) -> bool:
    """True for the variant whose options are the library's QuantizerConfig defaults."""
    return config == QuantizerConfig(codebook_size=config.codebook_size)


def build_model(variant: str, k: int, data, hidden: int | None) -> VQVAE:
    """The VQ-VAE for ``data``'s channels and image size (square images), with ``hidden``
    encoder/decoder channels (None: the library's 128) and the variant's quantizer."""
    if data.height != data.width:
        raise SystemExit(f"{data.spec}: images are {data.height}×{data.width}; square needed")
    variance = max(float(data.train.images.var()), 1e-6)
    config = VQVAEConfig(
        in_channels=data.channels,
        image_size=data.height,
        hidden=hidden,
        data_variance=variance,
        quantizer=quantizer_config(variant, k),
    )
    return VQVAE(config)


def run_one(variant: str, k: int, data, args) -> dict:
    """Train one (variant, K) and measure it on the test split: the row's keys and details."""
    torch.manual_seed(args.seed)  # the same initial weights outside the quantizer
    model = build_model(variant, k, data, args.hidden)
    q = model.config.quantizer
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
    # CPU seconds, not wall: with --threads 1 the same as an idle machine's wall time, and
    # unmoved when the grid shares the machine or is paused (kill -STOP) around other work.
    start, wall = time.process_time(), time.perf_counter()
    fit(model, batches, train, desc=f"{variant} K={k}", show_progress=args.progress)
    seconds, wall = time.process_time() - start, time.perf_counter() - wall
    metrics = reconstruction_metrics(model, data.test)
    levels = model.quantizer.index_levels
    return {
        "variant": variant,
        "K": k,
        "psnr": round(metrics["psnr"], 3),
        "ssim": round(metrics["ssim"], 4),
        "usage": round(metrics["codebook_usage"], 4),
        "perplexity": round(metrics["perplexity"], 1),
        "dead_codes": int(metrics["dead_codes"]),
        "seconds": round(seconds, 1),
        "default": is_default(q),
        "wall_seconds": round(wall, 1),
        "threads": torch.get_num_threads(),
        "bits_per_position": max(1, levels) * math.log2(model.quantizer.codebook_size),
        "hidden": model.config.width,
        "image_shape": [data.channels, data.height, data.width],
        "level_stats": {key: v for key, v in metrics.items() if key.startswith("level")},
    }


def markdown(details: list[dict], ssim: bool = False) -> str:
    """The table of ``details`` (with an SSIM column when ``ssim``)."""
    head = "| variant | K | bits/position | test PSNR (dB) |"
    rule = "|---|---:|---:|---:|"
    if ssim:
        head, rule = head + " SSIM |", rule + "---:|"
    lines = [
        head + f" usage | perplexity | dead codes | train {'CPU ' if ssim else ''}s |",
        rule + "---:|---:|---:|---:|",
    ]
    for d in details:
        name = f"**{d['variant']}** (default)" if d["default"] else d["variant"]
        cells = f"| {name} | {d['K']} | {d['bits_per_position']:.1f} | {d['psnr']:.2f} |"
        if ssim:
            cells += f" {d['ssim']:.3f} |" if "ssim" in d else " |"
        seconds = d.get("seconds", d.get("train_seconds"))  # train_seconds: rows before #14
        lines.append(
            f"{cells} {d['usage']:.3f} | {d['perplexity']:.1f} | {d['dead_codes']} "
            f"| {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def previous(out: Path) -> dict[tuple[str, int], dict]:
    """Rows (with their details) an earlier run wrote to ``out``, keyed by (variant, K)."""
    details = out.with_suffix(".details.json")
    if not details.is_file():
        return {}
    return {(d["variant"], d["K"]): d for d in json.loads(details.read_text())}


def write(measured: dict[tuple[str, int], dict], out: Path, grid: Grid) -> list[dict]:
    """Write every measured run, ordered by K and then by the grid's variants (others after,
    in VARIANTS order), as the rows, the details and the Markdown table; returns the details
    in that order."""
    rank = {v: i for i, v in enumerate(dict.fromkeys([*grid.variants, *VARIANTS]))}
    order = sorted(measured, key=lambda key: (key[1], rank[key[0]]))
    details = [measured[key] for key in order]
    rows = [{name: d[name] for name in grid.row_keys} for d in details]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".details.json"), json.dumps(details, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(details, "ssim" in grid.row_keys))
    return details


def plot(details: list[dict], path: Path, title: str) -> Path:
    """Two panels, codebook usage and test PSNR against K (log2 axis), one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(d["variant"] for d in details))
    ks = sorted({d["K"] for d in details})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for variant in variants:
        pts = sorted((d["K"], d["usage"], d["psnr"]) for d in details if d["variant"] == variant)
        k, usage, psnr = zip(*pts, strict=True)
        axes[0].plot(k, usage, "o-", label=variant)
        axes[1].plot(k, psnr, "o-", label=variant)
    axes[0].axhline(NEED_USAGE, color="grey", linestyle=":", linewidth=1)
    axes[0].set(ylabel="codebook usage (test split)", ylim=(0, 1.02))
    axes[1].set(ylabel="test PSNR (dB)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [f"$2^{{{int(math.log2(k))}}}$" for k in ks])
        ax.set_xlabel("codebook size K")
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def check_default(rows: list[dict]) -> list[str]:
    """The must-show criteria: default usage ≥ 0.95 (K = 1024) and ≥ 0.8 (K = 8192), and test
    PSNR no worse than plain VQ at the same K."""
    verdicts = []
    by = {(r["variant"], r["K"]): r for r in rows}
    default = next((r["variant"] for r in rows if r["default"]), None)
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


def check_large_codebooks(rows: list[dict]) -> list[str]:
    """#14 must-show 1, for every variant measured at both 2^10 and 2^16: usage at 2^16 ≥ 0.90
    and PSNR(2^16) - PSNR(2^10) ≥ 1 dB; and the best variant at 2^16 (the highest PSNR among
    those using ≥ 90% of the codes). PASS when at least one variant meets both."""
    by = {(r["variant"], r["K"]): r for r in rows}
    verdicts, passing = [], []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        small, large = by.get((variant, SMALL_K)), by.get((variant, LARGE_K))
        if small is None or large is None:
            continue
        gain = large["psnr"] - small["psnr"]
        ok_usage, ok_gain = large["usage"] >= NEED_USAGE, gain >= NEED_GAIN_DB
        if ok_usage and ok_gain:
            passing.append(variant)
        verdicts.append(
            f"{variant}: usage at K=2^16 {large['usage']:.3f} (need >= {NEED_USAGE}) "
            f"{'PASS' if ok_usage else 'FAIL'}; PSNR(2^16) - PSNR(2^10) = {gain:+.2f} dB "
            f"({small['psnr']:.2f} -> {large['psnr']:.2f}, need >= {NEED_GAIN_DB}) "
            f"{'PASS' if ok_gain else 'FAIL'}"
        )
    if not verdicts:
        return []
    alive = [r for r in rows if r["K"] == LARGE_K and r["usage"] >= NEED_USAGE]
    if alive:
        best = max(alive, key=lambda r: r["psnr"])
        verdicts.append(
            f"best at K=2^16 (highest PSNR with usage >= {NEED_USAGE}): {best['variant']} "
            f"({best['psnr']:.2f} dB, usage {best['usage']:.3f})"
        )
    else:
        verdicts.append(f"best at K=2^16: none uses >= {NEED_USAGE} of its codes")
    met = ", ".join(passing) if passing else "none"
    verdicts.append(
        f"#14 must-show 1: {'PASS' if passing else 'FAIL'} (variants meeting both: {met})"
    )
    return verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion-mnist:../shared/data/fashion-mnist")
    p.add_argument(
        "--grid",
        choices=list(GRIDS),
        help="default variants, sizes, output file and row keys (default: cifar10 when --data "
        "is CIFAR-10, else fashion)",
    )
    p.add_argument("--steps", type=int, default=1000, help="training steps per run (same for all)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, help="encoder/decoder channels (default 128)")
    p.add_argument(
        "--ks", type=int, nargs="+", help="codebook sizes (default 512 4096; CIFAR-10 2^10..2^16)"
    )
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: the grid's")
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

    grid = GRIDS[args.grid or ("cifar10" if is_cifar10(args.data) else "fashion")]
    if args.check_default:
        default = next(v for v in VARIANTS if is_default(quantizer_config(v, 1024)))
        variants = args.variants or ["vq", default]
        ks = args.ks or [1024, 8192]
        out = args.out or RESULTS / "codebook_default_check.json"
    else:
        variants = args.variants or list(grid.variants)
        ks = args.ks or list(grid.ks)
        out = args.out or RESULTS / grid.out

    runs = []
    for k in ks:
        for variant in variants:
            reason = unsupported(variant, k)
            if reason:
                print(f"# skipped {variant} K={k}: {reason}", flush=True)
            else:
                runs.append((variant, k))

    data = load_data(args.data)
    print(
        f"# {data.spec}: {len(data.train)} train / {len(data.test)} test "
        f"({data.channels}×{data.height}×{data.width}), {args.steps} steps of "
        f"{args.batch_size}, seed {args.seed}, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    measured = previous(out)
    details = list(measured.values())
    failed = []
    for variant, k in runs:
        try:
            measured[variant, k] = run_one(variant, k, data, args)
        except TrainingDiverged as err:  # no row; the rest of the grid still runs
            failed.append(f"# failed {variant} K={k}: {err}")
            print(failed[-1], flush=True)
            continue
        print(json.dumps(measured[variant, k]), flush=True)
        details = write(measured, out, grid)
    rows = [{name: d[name] for name in grid.row_keys} for d in details]
    print()
    print(markdown(details, "ssim" in grid.row_keys))
    if grid.name == "cifar10" and not args.check_default:
        if details:
            title = f"codebook ablation: {data.spec}, {args.steps} steps of {args.batch_size}"
            png = plot(details, out.with_suffix(".png"), title)
            print(f"wrote {png}", file=sys.stderr)
        verdicts = check_large_codebooks(rows)
    else:
        verdicts = check_default(rows)
    for line in verdicts + failed:
        print(line)
    print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
