"""Training-step time of the shipped MNIST VQ-VAE (configs/mnist.toml: hidden 128, 2 residual
blocks, K = 512, D = 64, batch 128) in fp32 and with ``train.precision = "bf16"``, side by side
in one process (interleaved rounds), and the ratio bf16 / fp32.

    python benchmarks/bf16_speed.py --threads 2
    python benchmarks/bf16_speed.py --quick          # tiny sizes, a smoke test

A step is the library loop's step: the forward under ``vqvae.training.loop.autocast`` (bf16:
encoder and decoder in bfloat16, the quantizer in float32), backward, AdamW (fused). The
batches are random 28×28 images (speed does not depend on the pixels). Writes
``benchmarks/results/bf16_speed.json``.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import (  # noqa: E402
    benchmark_parser,
    interleaved,
    machine_settings,
    median_ms,
    parse_benchmark_args,
    write_rows,
)

from vqvae.threads import cpu_name  # noqa: E402


def step_fn(precision: str, batches: list[torch.Tensor], quick: bool):
    from vqvae.models import VQVAE, VQVAEConfig
    from vqvae.quantizers import QuantizerConfig
    from vqvae.training.loop import autocast

    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=64 if quick else 512, dim=16 if quick else 64)
    hidden = 16 if quick else 128
    config = VQVAEConfig(
        in_channels=1, image_size=28, hidden=hidden, res_hidden=hidden // 4, quantizer=q,
        data_variance=0.095,
    )  # fmt: skip
    model = VQVAE(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    device = torch.device("cpu")
    calls = 0

    def step() -> None:
        nonlocal calls
        with autocast(precision, device):
            loss = model.training_losses((batches[calls % len(batches)], None))["loss"]
        calls += 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__, "bf16_speed.json", repeats=10, warmup=5, rounds=4)
    args = parse_benchmark_args(parser, argv)
    torch.set_num_threads(args.threads)
    batch = 16 if args.quick else 128
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(batch, 1, 28, 28, generator=g) for _ in range(8)]
    steps = {p: step_fn(p, batches, args.quick) for p in ("fp32", "bf16")}
    times = interleaved(steps, args.rounds, args.repeats, args.warmup)
    ms = {p: median_ms(t) for p, t in times.items()}
    row = {
        "shape": f"MNIST 28x28, batch {batch}, configs/mnist.toml network",
        "fp32_ms": ms["fp32"],
        "bf16_ms": ms["bf16"],
        "bf16_over_fp32": ms["bf16"] / ms["fp32"],
        "cpu": cpu_name(),
        "date": datetime.date.today().isoformat(),
        **machine_settings(args.threads),
    }
    print(
        f"step: fp32 {ms['fp32']:.1f} ms, bf16 {ms['bf16']:.1f} ms; "
        f"bf16 / fp32 = {row['bf16_over_fp32']:.3f}"
    )
    print(write_rows(args.out, [row]))


if __name__ == "__main__":
    main()
