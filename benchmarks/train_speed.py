"""Training-step throughput of the Sonnet-example VQ-VAE: ours vs the same network with the
quantizer taken out (the floor) vs a plain reference written the way the public PyTorch port
does it, side by side in one run; plus test PSNR after the same number of MNIST steps for ours
and plain ("no quality traded for speed").

    python benchmarks/train_speed.py --threads 2 \
        --data mnist:../shared/data/mnist --quality-steps 1000
    python benchmarks/train_speed.py --quick                  # tiny shapes, a smoke test

Network (all): hidden 128, residual hidden 32, 2 residual blocks, D = 64, K = 512, EMA decay
0.99, β = 0.25, downsample 4 (van den Oord et al. 2017, sec. 4.1, as in Sonnet's example).

- ``ours``: ``vqvae.models.VQVAE`` (the shipped quantizer defaults: k-means init on the first
  batch, dead-code reset), one step = ``training_losses`` → backward → the optimiser of the
  library's loop (AdamW, fused, no weight decay), in a process with the library's memory
  setting (``vqvae.training.keep_freed_memory``, which the ``vqvae`` command applies to its
  process; applied here by the benchmark itself).
- ``floor``: ours with the quantizer taken out: the same encoder, decoder, loss, optimiser and
  process; the decoder gets the encoder output in the channels-last layout ours's quantizer
  hands it. ``ours / floor`` is what the quantizer and its EMA/health bookkeeping cost.
- ``plain``: the same convolutions written with ``torch.nn`` here and
  ``_timing.PlainEMAQuantizer`` (the port's quantizer: permutes, cdist/argmin, one-hot
  matrices, perplexity every step), loss = MSE / data variance + β·commitment, ``torch.optim.Adam``
  with its defaults as in the port, in a process with the default allocator.
- ``plain_kept`` (reported alongside): ``plain`` in ours's process, i.e. with our memory
  setting, to separate what the setting gains from what the quantizer gains.
- ``ours_fit`` (opt-in, ``--impls ours floor plain ours_fit``): ours stepped by the library's
  own loop ``vqvae.training.fit`` with the CLI's defaults (grad clipping, finiteness checks,
  codebook health, the metrics log written to a run folder every 20 steps). ``ours_fit / ours``
  is the loop's overhead outside the step.
- ``ours_search_only`` (opt-in, a cost breakdown): ours with the quantizer's state updates
  switched off (no EMA statistics, usage, recent pool or dead-code reset; the codebook stays
  fixed): what the search, the straight-through estimator and the losses alone cost.

Every round starts one fresh process per memory setting (``--rounds`` of them, the order
alternating); inside a process the implementations' steps are interleaved. Throughput: batch
size / median step time over all rounds. The trainable parameter counts are printed and must
be equal (an EMA codebook has no trainable parameters, so taking it out removes none).
Quality (with ``--data``): ours trains with the library's loop (``vqvae.training.fit``, the
shipped MNIST schedule), plain with its own constant-rate Adam loop; both ``--quality-steps``
steps of batch 128, then test PSNR. Writes ``benchmarks/results/train_speed.json`` (rows:
shape, impl, images_per_s, psnr).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
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
IMPLS = ("ours", "floor", "plain")
# opt-in: ours inside the library's whole training loop; ours without codebook state updates
OPTIONAL_IMPLS = ("ours_fit", "ours_search_only")
# The process each implementation is timed in: "kept" applies the memory setting of the vqvae
# command (vqvae.training.keep_freed_memory), "default" leaves the allocator as it is.
PROCESS = {"ours": "kept", "floor": "kept", "plain_kept": "kept", "ours_fit": "kept"}
PROCESS["ours_search_only"] = "kept"
PROCESS["plain"] = "default"
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
    """Sonnet-example VQ-VAE for downsample 4, written plainly, with the port's quantizer."""

    def __init__(self, channels: int, data_variance: float = 1.0):
        super().__init__()
        self.data_variance = data_variance
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, HIDDEN // 2, 4, stride=2, padding=1),  # (B, 64, H/2, W/2)
            nn.ReLU(),
            nn.Conv2d(HIDDEN // 2, HIDDEN, 4, stride=2, padding=1),  # (B, 128, H/4, W/4)
            nn.ReLU(),
            nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1),
            PlainResidualStack(),
        )
        self.pre_quantize = nn.Conv2d(HIDDEN, DIM, 1)  # (B, D, H/4, W/4)
        self.quantizer = T.PlainEMAQuantizer(K, DIM, DECAY, BETA)
        self.decoder = nn.Sequential(
            nn.Conv2d(DIM, HIDDEN, 3, padding=1),
            PlainResidualStack(),
            nn.ConvTranspose2d(HIDDEN, HIDDEN // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(HIDDEN // 2, channels, 4, stride=2, padding=1),  # (B, C, H, W)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images in [0, 1] -> (reconstruction in [0, 1] unclamped, training loss)."""
        z, vq_loss, _ = self.quantizer(self.pre_quantize(self.encoder(x - 0.5)))
        x_hat = self.decoder(z) + 0.5
        return x_hat, F.mse_loss(x_hat, x) / self.data_variance + vq_loss


class OursWithoutQuantizer(nn.Module):
    """The floor: ``model`` (ours) with its quantizer taken out. The same encoder, decoder and
    loss; the decoder gets the encoder output in the channels-last layout (B, h, w, D) that the
    quantizer hands it, copied as the quantizer copies it."""

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = self.model.config
        target = c.target(x)
        z = self.model.encoder(target - 0.5).contiguous(memory_format=torch.channels_last)
        out = self.model.decoder(z)
        return c.to_images(out), c.reconstruction_loss(out, target)[1]


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


def build(impl: str, size: int, channels: int) -> nn.Module:
    if impl in ("ours", "ours_fit"):
        return build_ours(size, channels)
    if impl == "ours_search_only":
        model = build_ours(size, channels)
        model.quantizer.initialized.fill_(1.0)  # no k-means init either: the codebook stays
        model.quantizer.sync_from_buffers()
        model.quantizer._prepare_codebook = lambda flat, step: None
        model.quantizer._record = lambda flat, indices, counts, step: None
        return model
    if impl == "floor":
        return OursWithoutQuantizer(build_ours(size, channels))
    return PlainVQVAE(channels)  # plain, plain_kept


# --- throughput ----------------------------------------------------------------------------------
def training_step(model: nn.Module, x: Tensor):
    """One step: loss → backward → optimiser step. Ours and the floor: the library loop's
    optimiser (AdamW, fused, no weight decay); plain: ``torch.optim.Adam`` as the port has it."""
    if isinstance(model, PlainVQVAE):
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=True)
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
        config = TrainConfig(steps=n + 1, batch_size=len(x), lr=LR)
        batches = ShuffledBatches((x, None), len(x))
        with tempfile.TemporaryDirectory() as run_dir:  # the log a real run writes
            fit(
                model,
                batches,
                config,
                run_dir=run_dir,
                show_progress=False,
                on_step=lambda *_: stamps.append(clock()),
            )
        return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]

    return run


def measure(case: dict) -> dict:
    """Child side: one process, one memory setting; the step times of its implementations,
    interleaved, and their trainable parameter counts."""
    torch.set_num_threads(case["threads"])
    if case["process"] == "kept":
        from vqvae.training import keep_freed_memory

        keep_freed_memory()
    torch.manual_seed(0)
    size, channels, batch = case["size"], case["channels"], case["batch"]
    x = torch.rand(batch, channels, size, size)
    models = {impl: build(impl, size, channels) for impl in case["impls"]}
    steps = {i: training_step(m, x) for i, m in models.items() if i != "ours_fit"}
    runs = {i: loop_steps(m, x) for i, m in models.items() if i == "ours_fit"}
    times = T.interleaved(steps, case["rounds"], case["repeats"], case["warmup"], runs)
    return {"times": times, "parameters": {i: trainable(m) for i, m in models.items()}}


def throughput(shapes, args) -> list[dict]:
    impls = [*args.impls, *(["plain_kept"] if "plain" in args.impls else [])]
    groups: dict[str, list[str]] = {}
    for impl in impls:
        groups.setdefault(PROCESS[impl], []).append(impl)
    rows = []
    for name, size, channels, batch in shapes:
        times: dict[str, list[float]] = {impl: [] for impl in impls}
        counts: dict[str, int] = {}
        for r in range(args.rounds):
            order = list(groups) if r % 2 == 0 else list(reversed(groups))
            for process in order:
                case = {
                    "process": process,
                    "impls": groups[process],
                    "size": size,
                    "channels": channels,
                    "batch": batch,
                    "threads": args.threads,
                    "rounds": args.inner_rounds,
                    "repeats": args.repeats,
                    "warmup": args.warmup,
                }
                result = T.run_child(__file__, case)
                if "times" not in result:
                    raise SystemExit(f"{name}, {process} process: {result}")
                for impl, seconds in result["times"].items():
                    times[impl] += seconds
                counts.update(result["parameters"])
        print(f"{name}: trainable parameters {counts}")
        if len({counts[i] for i in impls}) != 1:
            raise SystemExit(f"parameter counts differ: {counts} (not the same network)")
        for impl in impls:
            ms = T.median_ms(times[impl])
            rows.append(
                {
                    "shape": name,
                    "impl": impl,
                    "images_per_s": round(batch / (ms / 1000.0), 1),
                    "median_ms": round(ms, 3),
                    "steps_timed": len(times[impl]),
                    "allocator": PROCESS[impl],
                    "psnr": None,
                    "parameters": counts[impl],
                }
            )
    return rows


# --- quality after the same number of steps ------------------------------------------------------
def train_plain(model: PlainVQVAE, images: Tensor, steps: int, batch: int, seed: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
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
    present = {r["impl"] for r in rows}
    impls = [i for i in (*IMPLS, "plain_kept", *OPTIONAL_IMPLS) if i in present]
    extra = [i for i in OPTIONAL_IMPLS if i in present]
    body = []
    for shape in dict.fromkeys(r["shape"] for r in rows):

        def ips(impl, shape=shape):
            return by.get((shape, impl), {}).get("images_per_s")

        def psnr(impl, shape=shape):
            return by.get((shape, impl), {}).get("psnr")

        ratios = [T.ratio(ips("ours"), ips(i)) for i in ("floor", "plain", "plain_kept")]
        ratios += [T.ratio(ips(i), ips("floor")) for i in extra]
        body.append([shape, *(ips(i) for i in impls), *ratios, psnr("ours"), psnr("plain")])
    headers = [*(f"{i} img/s" for i in impls), "ours/floor", "ours/plain", "ours/plain_kept"]
    headers += [f"{i}/floor" for i in extra]
    return T.markdown_table(["shape", *headers, "PSNR ours", "PSNR plain"], body)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == T.CHILD_FLAG:
        print(json.dumps(measure(json.loads(sys.argv[2]))))
        return 0
    parser = T.benchmark_parser(__doc__, "train_speed.json", repeats=10, warmup=3, rounds=4)
    parser.add_argument(
        "--impls",
        nargs="+",
        choices=IMPLS + OPTIONAL_IMPLS,
        default=list(IMPLS),
        help="opt-in: ours_fit (ours in the library's training loop), ours_search_only",
    )
    parser.add_argument(
        "--inner-rounds", type=int, default=2, help="interleaved rounds inside each process"
    )
    parser.add_argument("--data", help="data spec for the quality check, e.g. mnist:DIR")
    parser.add_argument("--quality-steps", type=int, default=1000, help="steps of each model")
    args = T.parse_benchmark_args(parser, argv)
    if args.quick:
        args.inner_rounds = 1
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
