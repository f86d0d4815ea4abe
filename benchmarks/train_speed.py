"""Training-step throughput of the Sonnet-example VQ-VAE: ours vs a plain reference vs the same
network without a quantizer (the floor), side by side in one run; plus test PSNR after the same
number of MNIST steps for ours and plain ("no quality traded for speed").

    python benchmarks/train_speed.py --threads 2 \
        --data mnist:../shared/data/mnist --quality-steps 1000
    python benchmarks/train_speed.py --quick                  # tiny shapes, a smoke test

Network (both): hidden 128, residual hidden 32, 2 residual blocks, D = 64, K = 512, EMA decay
0.99, β = 0.25, downsample 4 (van den Oord et al. 2017, sec. 4.1, as in Sonnet's example).

- ``ours``: ``vqvae.models.VQVAE`` (the shipped quantizer defaults: k-means init on the first
  batch, dead-code reset), one step = ``training_losses`` → backward → AdamW step (fused, as
  in the library's loop).
- ``plain``: the same convolutions written with ``torch.nn`` here and
  ``_timing.PlainEMAQuantizer`` (cdist/argmin/one-hot); loss = MSE / data variance + β·commitment.
- ``floor``: ``plain`` with the quantizer taken out (encoder → 1×1 conv to D → decoder) and
  ours's optimiser (fused AdamW); its decoder input gets the channels-last layout the
  quantizers' output has (``--floor-layout``).
- ``ours_fit`` (opt-in, ``--impls ours plain floor ours_fit``): ours stepped by the library's
  own loop ``vqvae.training.fit`` (its optimiser, grad clipping, checks, health, logging).

The parameter counts of ours and plain are printed and must be equal. Throughput: batch size /
median step time over ``--rounds`` × ``--repeats`` interleaved steps of random images. Quality
(with ``--data``): ours trains with the library's loop (``vqvae.training.fit``, the shipped
MNIST schedule), plain with a constant-rate AdamW loop; both ``--quality-steps`` steps of batch
128, then test PSNR (ours: ``reconstruction_metrics``; plain: its own, from the mean MSE).
Writes ``benchmarks/results/train_speed.json`` (rows: shape, impl, images_per_s, psnr).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from time import perf_counter as clock

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
import _timing as T  # noqa: E402

from vqvae.models import VQVAE, VQVAEConfig  # noqa: E402
from vqvae.quantizers import QuantizerConfig  # noqa: E402

HIDDEN, RES_HIDDEN, RES_BLOCKS, DIM, K, DECAY, BETA = 128, 32, 2, 64, 512, 0.99, 0.25
SHAPES = [("28x28x1 b128", 28, 1, 128), ("32x32x3 b32", 32, 3, 32)]
QUICK_SHAPES = [("8x8x1 b4", 8, 1, 4)]
IMPLS = ("ours", "plain", "floor")
OPTIONAL_IMPLS = ("ours_fit",)  # opt-in: ours inside the library's whole training loop
LR = 1e-3


# --- the plain reference network -----------------------------------------------------------------
class PlainResidualStack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for _ in range(RES_BLOCKS):
            self.convs.append(
                nn.Sequential(
                    nn.ReLU(),
                    nn.Conv2d(HIDDEN, RES_HIDDEN, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(RES_HIDDEN, HIDDEN, 1),
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(x)
        return F.relu(x)


class PlainVQVAE(nn.Module):
    """Sonnet-example VQ-VAE for downsample 4; ``quantize=False`` gives the floor network."""

    def __init__(
        self,
        channels: int,
        data_variance: float = 1.0,
        quantize: bool = True,
        channels_last_codes: bool = True,
    ):
        super().__init__()
        self.data_variance = data_variance
        self.channels_last_codes = channels_last_codes
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, HIDDEN // 2, 4, stride=2, padding=1),  # (B, 64, H/2, W/2)
            nn.ReLU(),
            nn.Conv2d(HIDDEN // 2, HIDDEN, 4, stride=2, padding=1),  # (B, 128, H/4, W/4)
            nn.ReLU(),
            nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1),
            PlainResidualStack(),
        )
        self.pre_quantize = nn.Conv2d(HIDDEN, DIM, 1)  # (B, D, H/4, W/4)
        self.quantizer = T.PlainEMAQuantizer(K, DIM, DECAY, BETA) if quantize else None
        self.decoder = nn.Sequential(
            nn.Conv2d(DIM, HIDDEN, 3, padding=1),
            PlainResidualStack(),
            nn.ConvTranspose2d(HIDDEN, HIDDEN // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(HIDDEN // 2, channels, 4, stride=2, padding=1),  # (B, C, H, W)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images in [0, 1] -> (reconstruction in [0, 1] unclamped, training loss)."""
        z = self.pre_quantize(self.encoder(x - 0.5))
        vq_loss = z.new_zeros(())
        if self.quantizer is not None:
            z, vq_loss, _ = self.quantizer(z)
        elif self.channels_last_codes:
            # The quantizers (ours and plain) hand the decoder a (B, h, w, D) tensor viewed as
            # (B, D, h, w), i.e. channels-last strides, and the decoder's convolutions then run
            # channels-last (about 10% faster on a 1-thread AVX-512 CPU). The floor feeds its
            # decoder the same layout, so that it differs from them only by the quantizer.
            z = z.contiguous(memory_format=torch.channels_last)
        x_hat = self.decoder(z) + 0.5
        return x_hat, F.mse_loss(x_hat, x) / self.data_variance + vq_loss


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_ours(size: int, channels: int, data_variance: float = 1.0) -> VQVAE:
    quantizer = QuantizerConfig(kind="ema", codebook_size=K, dim=DIM, beta=BETA, decay=DECAY)
    config = VQVAEConfig(
        in_channels=channels,
        image_size=size,
        downsample=4,
        hidden=HIDDEN,
        res_blocks=RES_BLOCKS,
        res_hidden=RES_HIDDEN,
        data_variance=data_variance,
        quantizer=quantizer,
    )
    return VQVAE(config)


# --- throughput ----------------------------------------------------------------------------------
def training_step(model: nn.Module, x: Tensor, fused: bool):
    """One step: loss → backward → AdamW. ``fused``: the optimiser the library's loop uses
    (ours, and the floor, so it stays the same network and optimiser minus the quantizer);
    the plain reference keeps torch's default, as the public ports do."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, fused=fused)
    model.train()
    ours = isinstance(model, VQVAE)

    def step() -> None:
        # ours: the loss the library's training loop calls; plain/floor: (x̂, loss)
        loss = model.training_losses((x, None))["loss"] if ours else model(x)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def loop_steps(model: VQVAE, x: Tensor):
    """``run(n)``: n steps of ``vqvae.training.fit`` on batch ``x`` (grad clipping, finiteness
    checks, codebook health, logging every 20 steps: what a real run pays per step); returns the
    n intervals between its per-step callbacks (one extra step opens the first interval)."""
    from vqvae.training import ShuffledBatches, TrainConfig, fit

    def run(n: int) -> list[float]:
        stamps: list[float] = []
        config = TrainConfig(steps=n + 1, batch_size=len(x), lr=LR, checkpoint_every=0)
        batches = ShuffledBatches((x, None), len(x))
        fit(model, batches, config, show_progress=False, on_step=lambda *_: stamps.append(clock()))
        return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]

    return run


def throughput(shapes, args) -> list[dict]:
    rows = []
    for name, size, channels, batch in shapes:
        torch.manual_seed(0)
        x = torch.rand(batch, channels, size, size)
        models = {
            "ours": build_ours(size, channels),
            "plain": PlainVQVAE(channels),
            "floor": PlainVQVAE(channels, quantize=False, channels_last_codes=args.floor_cl),
            "ours_fit": build_ours(size, channels),
        }
        counts = {impl: trainable(m) for impl, m in models.items()}
        print(f"{name}: trainable parameters {counts}")
        if counts["ours"] != counts["plain"]:
            raise SystemExit(f"parameter counts differ: {counts} (not the same network)")
        steps = {i: training_step(models[i], x, i != "plain") for i in args.impls if i in IMPLS}
        runs = {i: loop_steps(models[i], x) for i in args.impls if i in OPTIONAL_IMPLS}
        times = T.interleaved(steps, args.rounds, args.repeats, args.warmup, runs)
        for impl, seconds in times.items():
            ms = T.median_ms(seconds)
            rows.append(
                {
                    "shape": name,
                    "impl": impl,
                    "images_per_s": round(batch / (ms / 1000.0), 1),
                    "median_ms": round(ms, 3),
                    "psnr": None,
                    "parameters": counts[impl],
                }
            )
    return rows


# --- quality after the same number of steps ------------------------------------------------------
def train_plain(model: PlainVQVAE, images: Tensor, steps: int, batch: int, seed: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=g)
    position = 0
    model.train()
    for _ in range(steps):
        if position + batch > len(order):
            order, position = torch.randperm(len(images), generator=g), 0
        x = images[order[position : position + batch]]
        position += batch
        loss = model(x)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def plain_psnr(model: PlainVQVAE, images: Tensor, batch: int = 500) -> float:
    """PSNR (dB) of [0, 1]-clamped reconstructions, from the mean squared error over the set."""
    model.eval()
    sq_err = 0.0
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        sq_err += float((model(x)[0].clamp(0, 1) - x).pow(2).double().sum())
    return 10.0 * math.log10(1.0 / max(sq_err / images.numel(), 1e-12))


def quality(spec: str, steps: int, batch: int = 128, seed: int = 0) -> dict[str, float]:
    from vqvae.data import load_data
    from vqvae.pipeline.stages import reconstruction_metrics
    from vqvae.training import ShuffledBatches, TrainConfig, fit

    data = load_data(spec)
    train = torch.from_numpy(np.ascontiguousarray(data.train.images, dtype=np.float32))
    test = torch.from_numpy(np.ascontiguousarray(data.test.images, dtype=np.float32))
    variance = max(float(data.train.images.var()), 1e-6)
    size, channels = train.shape[-1], train.shape[1]

    torch.manual_seed(seed)
    ours = build_ours(size, channels, variance)
    config = TrainConfig(steps=steps, batch_size=batch, lr=LR, seed=seed, checkpoint_every=0)
    fit(ours, ShuffledBatches((train, None), batch, seed), config, show_progress=False)
    torch.manual_seed(seed)
    plain = PlainVQVAE(channels, variance)
    train_plain(plain, train, steps, batch, seed)
    return {
        "ours": reconstruction_metrics(ours, data.test)["psnr"],
        "plain": plain_psnr(plain, test),
    }


def table(rows: list[dict]) -> str:
    by = {(r["shape"], r["impl"]): r for r in rows}
    impls = [i for i in IMPLS + OPTIONAL_IMPLS if any(r["impl"] == i for r in rows)]
    body = []
    for shape in dict.fromkeys(r["shape"] for r in rows):

        def ips(impl, shape=shape):
            return by.get((shape, impl), {}).get("images_per_s")

        def psnr(impl, shape=shape):
            return by.get((shape, impl), {}).get("psnr")

        ratios = [T.ratio(ips("ours"), ips("floor")), T.ratio(ips("ours"), ips("plain"))]
        body.append([shape, *(ips(i) for i in impls), *ratios, psnr("ours"), psnr("plain")])
    headers = ["shape", *(f"{i} img/s" for i in impls), "ours/floor", "ours/plain"]
    return T.markdown_table(headers + ["PSNR ours", "PSNR plain"], body)


def main(argv: list[str] | None = None) -> int:
    parser = T.benchmark_parser(__doc__, "train_speed.json", repeats=10, warmup=3, rounds=3)
    parser.add_argument(
        "--impls",
        nargs="+",
        choices=IMPLS + OPTIONAL_IMPLS,
        default=list(IMPLS),
        help="ours_fit (opt-in): ours stepped by the library's training loop",
    )
    parser.add_argument(
        "--floor-layout",
        choices=["channels-last", "nchw"],
        default="channels-last",
        help="layout of the floor's decoder input (default: the one the quantizers produce)",
    )
    parser.add_argument("--data", help="data spec for the quality check, e.g. mnist:DIR")
    parser.add_argument("--quality-steps", type=int, default=1000, help="steps of each model")
    args = T.parse_benchmark_args(parser, argv)
    args.floor_cl = args.floor_layout == "channels-last"
    torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rows = throughput(shapes, args)
    T.write_rows(args.out, rows)
    if args.data:
        psnr = quality(args.data, args.quality_steps)
        # One data set (MNIST: 28×28×1, batch 128): its PSNR goes in the first shape's rows.
        for row in rows:
            if row["impl"] in psnr and row["shape"] == shapes[0][0]:
                row.update(psnr=round(psnr[row["impl"]], 2), quality_steps=args.quality_steps)
                row["quality_data"] = args.data
        print(f"test PSNR after {args.quality_steps} steps: {psnr}")
        T.write_rows(args.out, rows)
    print(table(rows))
    print(f"\nthreads={args.threads}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
