"""Quantizer forward+backward speed and memory: ours vs vector-quantize-pytorch vs a plain
reference, next to the bare distance matrix product, side by side in one run.

    pip install -e '.[bench]'
    python benchmarks/quantizer_speed.py --threads 2              # the four configs below
    python benchmarks/quantizer_speed.py --quick                  # tiny shapes, a smoke test
    python benchmarks/quantizer_speed.py --large --impls ours --rounds 1 \
        --out benchmarks/results/quantizer_speed_large.json       # K = 65,536
    python benchmarks/quantizer_speed.py --large --impls ours matmul conv simvq lfq bsq \
        --rounds 1 --out benchmarks/results/quantizer_speed_k65536.json  # #14: vs the product

Implementations, all EMA codebooks (decay 0.99, β = 0.25, straight-through, same K and D), in
training mode; one step = forward, loss = mean(z_q²) + quantizer loss, backward:

- ``ours``: ``vqvae.quantizers`` kind "ema" with its default health bookkeeping (usage, dead-code
  reset); k-means init off, like the others (it runs once, not per step).
- ``vqp``: ``vector_quantize_pytorch.VectorQuantize`` (kmeans init, dead-code expiry and the
  rotation trick off: the same EMA VQ).
- ``plain``: ``_timing.PlainEMAQuantizer`` (cdist, argmin, one-hot EMA).
- ``matmul``: the bare distance product ``||e||² - 2 z·eᵀ`` (one ``torch.addmm`` of
  N×D · D×K into a preallocated N×K buffer: the BLAS product, MKL in torch's CPU wheels), the
  floor any exact search pays.
- ``conv``: the same bare product computed the way ours's PyTorch fallback computes it on CPU
  (where the C++ kernels cannot be built), as one oneDNN 1×1 convolution of the N vectors. Its
  N×K output is fresh on every call, so its process keeps freed memory
  (``vqvae.training.keep_freed_memory``) and the figure is the product alone, without the
  kernel mapping fresh pages each time. Ours itself runs the fused search of
  ``vqvae.quantizers.native`` (product and row minimum in one pass, no N×K output at all).
- ``simvq``, ``lfq``, ``bsq`` (only when named in ``--impls``): the package's other quantizer
  kinds of that K (SimVQ through the same search; LFQ and BSQ, K = 2^bits, without one).

Every (config, impl) is measured in a fresh subprocess whose address space is capped at
``--mem-cap-gib`` (an implementation that needs more is recorded as out of memory). Peak memory
growth = resident high-water mark after the timed steps minus the resident size once inputs and
modules are built. ``--rounds`` alternate the implementations of a config; the median is over
all timed steps. Writes ``benchmarks/results/quantizer_speed.json`` after every config (rows:
config, impl, median_ms, peak_mem_mb, vectors_per_s, oom).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _timing as T  # noqa: E402

# (name, input shape (B, D, H, W), K); the last is 65,536 vectors of D = 256 as a 32×32 map.
CONFIGS = [
    ("32x64x8x8 K=512", (32, 64, 8, 8), 512),
    ("128x64x16x16 K=1024", (128, 64, 16, 16), 1024),
    ("64x64x32x32 K=8192", (64, 64, 32, 32), 8192),
    ("65536x256 K=16384", (64, 256, 32, 32), 16384),
]
QUICK_CONFIGS = [("4x8x4x4 K=16", (4, 8, 4, 4), 16)]
# --large: the largest codebook the library aims at (the peers' N×K tensors would need 16 GiB)
LARGE_CONFIGS = [("65536x64 K=65536", (64, 64, 32, 32), 65536)]
IMPLS = ("ours", "vqp", "plain", "matmul", "conv")
# The other quantizers of the package (#14), on request: SimVQ searches its K codes through the
# same core; LFQ and BSQ have no search at all (K = 2^bits sign patterns).
FAMILY_IMPLS = ("simvq", "lfq", "bsq")
DECAY, BETA = 0.99, 0.25


# --- one measurement (runs in the child process) -------------------------------------------------
def build_step(impl: str, shape: tuple[int, ...], k: int):
    """The inputs and module of ``impl`` and a closure running one training step."""
    import torch

    d = shape[1]
    torch.manual_seed(0)
    if impl == "matmul":
        n = math.prod(shape) // d
        z, codebook = torch.randn(n, d), torch.randn(k, d)
        codes_sq = codebook.pow(2).sum(1)  # (K,)
        out: list = []  # the (N, K) buffer, allocated by the first (warm-up) call

        def step() -> None:
            if not out:
                out.append(torch.empty(n, k))
            torch.addmm(codes_sq, z, codebook.t(), beta=1.0, alpha=-2.0, out=out[0])

        return step
    if impl == "conv":
        import torch.nn.functional as F

        from vqvae.training import keep_freed_memory

        keep_freed_memory()

        n = math.prod(shape) // d
        z, codebook = torch.randn(n, d), torch.randn(k, d)
        image = z.reshape(1, n, 1, d).permute(0, 3, 1, 2)  # channels-last (1, D, N, 1)
        filters, codes_sq = (-2.0 * codebook).reshape(k, d, 1, 1), codebook.pow(2).sum(1)

        def step() -> None:
            F.conv2d(image, filters, codes_sq)

        return step

    z = torch.randn(*shape, requires_grad=True)
    if impl == "ours":
        from vqvae.quantizers import QuantizerConfig, build_quantizer

        module = build_quantizer(
            QuantizerConfig(
                kind="ema", codebook_size=k, dim=d, beta=BETA, decay=DECAY, kmeans_init=False
            )
        )

        def forward():
            o = module(z)
            return o.quantized, o.loss
    elif impl in FAMILY_IMPLS:
        from vqvae.quantizers import QuantizerConfig, build_quantizer

        config = QuantizerConfig(kind=impl, codebook_size=k, dim=d, beta=BETA, kmeans_init=False)
        module = build_quantizer(config)

        def forward():
            o = module(z)
            return o.quantized, o.loss
    elif impl == "vqp":
        from vector_quantize_pytorch import VectorQuantize

        module = VectorQuantize(
            dim=d,
            codebook_size=k,
            decay=DECAY,
            commitment_weight=BETA,
            kmeans_init=False,
            threshold_ema_dead_code=0,
            rotation_trick=False,
            accept_image_fmap=True,
            channel_last=False,
        )

        def forward():
            quantized, _, loss = module(z)
            return quantized, loss
    elif impl == "plain":
        module = T.PlainEMAQuantizer(k, d, decay=DECAY, beta=BETA)

        def forward():
            quantized, loss, _ = module(z)
            return quantized, loss
    else:
        known = ", ".join(IMPLS + FAMILY_IMPLS)
        raise ValueError(f"unknown impl {impl!r}; expected one of {known}")
    module.train()

    def step() -> None:
        quantized, loss = forward()
        (quantized.square().mean() + loss).backward()
        z.grad = None

    return step


def measure(case: dict) -> dict:
    """Child side: build, warm up, time; the result as a JSON-able dict."""
    T.cap_address_space(case["mem_cap_gib"])
    import torch

    torch.set_num_threads(case["threads"])
    try:
        step = build_step(case["impl"], tuple(case["shape"]), case["k"])
        T.reset_peak_rss()
        base = T.current_rss_mb()
        times = T.time_calls(step, case["repeats"], case["warmup"])
        return {"times": times, "peak_mem_mb": T.peak_rss_mb() - base}
    except (RuntimeError, MemoryError) as e:
        if T.is_oom(e):
            return {"oom": True}
        raise


# --- the parent: every config, impls interleaved ------------------------------------------------
def run_config(name, shape, k, args) -> list[dict]:
    results: dict[str, dict] = {impl: {"times": [], "peak": 0.0} for impl in args.impls}
    case = dict(shape=shape, k=k, threads=args.threads, mem_cap_gib=args.mem_cap_gib)
    case.update(repeats=args.repeats, warmup=args.warmup)
    for _ in range(args.rounds):
        for impl in args.impls:
            r = results[impl]
            if r.get("oom") or r.get("error"):
                continue  # it will not fit next round either
            got = T.run_child(__file__, {**case, "impl": impl}, args.timeout_s)
            if "times" in got:
                r["times"] += got["times"]
                r["peak"] = max(r["peak"], got["peak_mem_mb"])
            else:
                r.update(got)
    n_vectors = math.prod(shape) // shape[1]
    rows = []
    for impl, r in results.items():
        ms = T.median_ms(r["times"]) if r["times"] else None
        rows.append(
            {
                "config": name,
                "impl": impl,
                "median_ms": None if ms is None else round(ms, 3),
                "peak_mem_mb": round(r["peak"], 1) if r["times"] else None,
                "vectors_per_s": None if ms is None else round(n_vectors / (ms / 1000.0)),
                "oom": bool(r.get("oom", False)),
                "steps": len(r["times"]),
                **({"error": r["error"]} if r.get("error") else {}),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    by = {(r["config"], r["impl"]): r for r in rows}
    configs = list(dict.fromkeys(r["config"] for r in rows))

    def ms(config, impl):
        return by.get((config, impl), {}).get("median_ms")

    def shown(config, impl):
        r = by.get((config, impl))
        if r is None:
            return None
        if r["oom"]:
            return "out of memory"
        if r["median_ms"] is None:
            return "error"
        return f"{r['median_ms']:.3g} ms / {r['peak_mem_mb']:.0f} MB"

    present = {r["impl"] for r in rows}
    impls = [i for i in IMPLS if i in present or i not in FAMILY_IMPLS]
    impls += [i for i in FAMILY_IMPLS if i in present]
    body = [
        [
            c,
            *(shown(c, i) for i in impls),
            T.ratio(ms(c, "vqp"), ms(c, "ours")),
            T.ratio(ms(c, "plain"), ms(c, "ours")),
            T.ratio(ms(c, "ours"), ms(c, "matmul")),
            T.ratio(ms(c, "ours"), ms(c, "conv")),
        ]
        for c in configs
    ]
    headers = ["config", *(f"{i} (ms / peak MB)" for i in impls)]
    ratios = ["vqp/ours", "plain/ours", "ours/matmul", "ours/conv"]
    return T.markdown_table(headers + ratios, body)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [T.CHILD_FLAG]:
        print(json.dumps(measure(json.loads(argv[1]))))
        return 0
    parser = T.benchmark_parser(__doc__, "quantizer_speed.json", repeats=5, warmup=2, rounds=2)
    parser.add_argument("--impls", nargs="+", choices=IMPLS + FAMILY_IMPLS, default=list(IMPLS))
    parser.add_argument("--mem-cap-gib", type=float, default=14.0, help="address-space cap")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per child process")
    parser.add_argument("--large", action="store_true", help="K = 65,536 instead of the four")
    args = T.parse_benchmark_args(parser, argv)
    configs = QUICK_CONFIGS if args.quick else LARGE_CONFIGS if args.large else CONFIGS
    rows: list[dict] = []
    for name, shape, k in configs:
        rows += run_config(name, shape, k, args)
        T.write_rows(args.out, rows)  # after every config: an interrupted run keeps it
        print(table([r for r in rows if r["config"] == name]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    print(f"\nthreads={args.threads}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
