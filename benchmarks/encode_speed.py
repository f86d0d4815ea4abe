"""Throughput of the stages after training: ``vqvae encode`` (images -> code maps) and one
training step of each prior on 7×7 code maps (K = 512), in one run.

    python benchmarks/encode_speed.py --threads 2
    python benchmarks/encode_speed.py --quick                 # tiny sizes, a smoke test

- ``encode``: ``ModelFamily.encode`` (what ``vqvae encode`` runs: eval mode, no grad, batches
  of ``EVAL_BATCH``) over ``--images`` random 28×28×1 images, with the MNIST model of
  ``configs/mnist.toml``; images/s = images / median seconds of a whole pass.
- ``pixelcnn`` / ``transformer``: one training step (``training_losses`` -> backward -> AdamW
  step) of the prior that ``vqvae train-prior`` builds from ``configs/mnist.toml``
  (``generation.build_prior``, class-conditional with 10 classes), on a batch of
  ``prior_train.batch_size`` random 7×7 code maps; images/s = batch / median step time.

Weights and data are random: speed does not depend on them. Writes
``benchmarks/results/encode_speed.json`` (rows: task, impl, images_per_s, median_ms, batch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _timing as T  # noqa: E402

from vqvae import configs  # noqa: E402
from vqvae.models import build_model  # noqa: E402
from vqvae.pipeline.families import FAMILIES  # noqa: E402
from vqvae.pipeline.run import resolve_config  # noqa: E402
from vqvae.priors import PRIORS, TransformerPriorConfig, transformer  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist.toml"
GRID, CLASSES = 7, 10


def main(argv: list[str] | None = None) -> int:
    parser = T.benchmark_parser(__doc__, "encode_speed.json", repeats=5, warmup=2, rounds=3)
    parser.add_argument("--images", type=int, default=10_000, help="images per encode pass")
    parser.add_argument("--batch", type=int, help="prior batch (default: the config's)")
    args = T.parse_benchmark_args(parser, argv)
    if args.quick:
        args.images = 64
        args.batch = args.batch or 4
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = resolve_config(CONFIG, [])
    batch = args.batch or config.prior_train.batch_size
    shape = {"in_channels": 1, "image_size": 28}  # what MNIST would give: 28×28×1 -> 7×7
    model = build_model(configs.replace(config.model, "model", **shape)).eval()  # K = 512
    k = config.model.quantizer.codebook_size
    images = np.random.default_rng(0).random((args.images, 1, 28, 28), dtype=np.float32)
    codes = torch.randint(k, (batch, GRID, GRID))
    labels = torch.randint(CLASSES, (batch,))

    steps = {"encode": lambda: FAMILIES.get("vqvae").encode(model, images)}
    # The config's PixelCNN and release 0.1's default Transformer (dim 128, 4 heads, 4 layers:
    # the sizes this benchmark has always timed), for 7×7 maps of K codes.
    for section in (config.prior, TransformerPriorConfig(**transformer.FIXED_SIZES)):
        cls = PRIORS.get(section.kind)
        sized = cls.fitted_config(section, grid=(GRID, GRID), codebook_size=k, num_classes=CLASSES)
        steps[section.kind] = T.training_step(cls(sized), [(codes, labels)])
    times = T.interleaved(steps, args.rounds, args.repeats, args.warmup)

    rows = []
    for impl, seconds in times.items():
        ms = T.median_ms(seconds)
        n = args.images if impl == "encode" else batch
        rows.append(
            {
                "task": "encode" if impl == "encode" else "prior_train",
                "impl": "vqvae" if impl == "encode" else impl,
                "images_per_s": round(n / (ms / 1000.0), 1),
                "median_ms": round(ms, 3),
                "batch": n,
                "grid": [GRID, GRID],
                "codebook_size": k,
            }
        )
    T.write_rows(args.out, rows)
    body = [[r["task"], r["impl"], r["batch"], r["median_ms"], r["images_per_s"]] for r in rows]
    print(T.markdown_table(["task", "impl", "images per call", "median ms", "images/s"], body))
    print(f"\nthreads={args.threads}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
