"""Priors sized to the codes against release 0.1's fixed default, on one run's codes.

    vqvae train --data digits --out runs/digits
    python benchmarks/prior_sizing.py runs/digits --steps 1000
    python benchmarks/prior_sizing.py runs/digits --quick      # a smoke test

For each case, on the run's cached codes (``RUN/codes/``, written by ``train-prior`` or here):

- ``step_ms``: median seconds of one training step (``training_losses`` -> backward -> AdamW
  step) on the same batches of ``prior_train.batch_size`` training code maps, all cases timed
  side by side (``_timing.interleaved``), so a slow phase of a shared machine hits each alike;
- ``nll_bits_per_code``: the held-out NLL (``prior_nll_bits_per_code``, as ``train-prior``
  measures it) after ``--steps`` steps of the run's ``prior_train`` schedule (the same steps,
  batches and seed for every case);
- ``params`` and ``mb`` (float32 weights).

Cases: ``fixed`` (release 0.1's default: 128 channels, 12 layers, kernel 5), ``fitted`` (the
sizes ``GatedPixelCNN.fitted_config`` chooses for these codes and this many training maps when
none is set: what ``train-prior`` trains now) and ``--sweep`` variants ``CxLxK``.
Writes ``benchmarks/results/prior_sizing.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _timing as T  # noqa: E402

from vqvae.pipeline.families import FAMILIES  # noqa: E402
from vqvae.pipeline.families.base import fit_on_device  # noqa: E402
from vqvae.pipeline.run import RunDir  # noqa: E402
from vqvae.priors import PRIORS, PixelCNNConfig  # noqa: E402
from vqvae.priors.pixelcnn import FIXED_SIZES  # noqa: E402


def case_configs(sweep: list[str]) -> dict[str, PixelCNNConfig]:
    cases = {"fixed": PixelCNNConfig(**FIXED_SIZES), "fitted": PixelCNNConfig()}
    for spec in sweep:
        c, layers, k = (int(v) for v in spec.split("x"))
        cases[spec] = PixelCNNConfig(channels=c, layers=layers, kernel_size=k)
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = T.benchmark_parser(__doc__, "prior_sizing.json", repeats=10, warmup=3, rounds=3)
    parser.add_argument("run", help="a run folder with a trained image VQ-VAE")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each prior")
    parser.add_argument("--sweep", nargs="*", default=[], help="extra sizes CxLxK, e.g. 64x4x3")
    parser.add_argument("--nll-cases", nargs="*", help="train only these cases (default: all)")
    args = T.parse_benchmark_args(parser, argv)
    if args.quick:
        args.steps = 5
    torch.set_num_threads(args.threads)

    run = RunDir(args.run)
    config, spec = run.read_config()
    family = FAMILIES.get(config.model.kind)
    data = family.load_data(spec, config.model)
    model = family.load_model(run)
    (level,) = family.prior_levels(run, model)
    train, test = (family.split_codes(run, model, data, s) for s in ("train", "test"))
    num_classes = int(data.train.num_classes or 0) if config.conditional_prior else 0
    codes = torch.from_numpy(train.levels[0])
    labels = torch.from_numpy(train.labels.astype(np.int64)) if num_classes else None
    train_config = dataclasses.replace(config.prior_train, steps=args.steps, log_every=10**9)
    batch = train_config.batch_size
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(20):  # the same 20 batches for every case's timing
        idx = torch.randint(len(codes), (batch,), generator=g)
        batches.append((codes[idx], None if labels is None else labels[idx]))

    priors, rows = {}, {}
    for name, section in case_configs(args.sweep).items():
        cls = PRIORS.get(section.kind)
        sized = cls.fitted_config(
            section, grid=level.shape, codebook_size=level.codebook_size,
            num_classes=num_classes, train_items=len(codes),
        )  # fmt: skip
        torch.manual_seed(0)
        priors[name] = cls(sized)
        n = sum(p.numel() for p in priors[name].parameters())
        rows[name] = {
            "case": name,
            "channels": sized.channels,
            "layers": sized.layers,
            "kernel_size": sized.kernel_size,
            "grid": list(level.shape),
            "codebook_size": level.codebook_size,
            "params": n,
            "mb": round(n * 4 / 2**20, 2),
        }
    # Speed: fresh copies, side by side on the same batches.
    steps = {}
    for name, prior in priors.items():
        copy = type(prior)(prior.config)
        copy.load_state_dict(prior.state_dict())
        steps[name] = T.training_step(copy, batches)
    times = T.interleaved(steps, args.rounds, args.repeats, args.warmup)
    for name, seconds in times.items():
        rows[name]["step_ms"] = round(T.median_ms(seconds), 3)
    # Quality: the same schedule, batches and seed for every case, then the held-out NLL.
    for name, prior in priors.items():
        if args.nll_cases is not None and name not in args.nll_cases:
            rows[name].update(steps=None, nll_bits_per_code=None)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            fit_on_device(
                prior, (codes, labels), train_config, run_dir=tmp, resume=False,
                desc=name, show_progress=False,
            )  # fmt: skip
        nll = family.prior_metrics(model, [prior.eval()], test)["prior_nll_bits_per_code"]
        rows[name]["steps"] = args.steps
        rows[name]["nll_bits_per_code"] = round(nll, 4)
        print(f"{name}: {rows[name]}", flush=True)
    fixed = rows["fixed"]
    for row in rows.values():
        row["speedup_vs_fixed"] = round(T.ratio(fixed["step_ms"], row["step_ms"]), 2)
    headers = ["case", "channels", "layers", "kernel", "MB", "step ms", "×", "NLL bits/code"]
    table = [
        [r["case"], r["channels"], r["layers"], r["kernel_size"], r["mb"], r["step_ms"],
         r["speedup_vs_fixed"], r["nll_bits_per_code"]]
        for r in rows.values()
    ]  # fmt: skip
    print(T.markdown_table(headers, table))
    out = T.write_rows(args.out, list(rows.values()))
    print(f"{args.steps} steps, batch {batch}; threads={args.threads}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
