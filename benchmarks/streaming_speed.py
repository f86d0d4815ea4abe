"""Streaming speed of a causal audio VQ-VAE: encode + decode of one clip at batch 1, chunk by
chunk as a real-time codec runs it, against the offline pass, in x real time; and, on the same
clips, whether the chunked codes are the offline codes and how far the chunked output is.

    flock /tmp/vqvae-cpu.lock python benchmarks/streaming_speed.py     # alone on the CPUs
    python benchmarks/streaming_speed.py --quick                       # tiny sizes, a smoke test

The model is ``--config``'s, by default ``configs/fsdd-causal.toml`` (configs/fsdd.toml with
``model.causal = true``: hidden 128, 16x downsampling, K = 512 at 8 kHz; the speech codec's is
``--config configs/fsdd-rvq.toml --chunks 1 5 7 10 25 50``), untrained (speed does not depend
on the weights), its codebook set by k-means on its own encoder outputs of the clips (the first
training step's initialisation), so that the codes are varied. Clips: the first ``--clips``
FSDD test recordings (``--data``), else voiced-sounding synthetic signals.

- ``chunk = N hops`` (``--chunks``): a ``StreamEncoder`` and a ``StreamDecoder`` each get N
  hops / N codes at a time, every chunk encoded and at once decoded; x real time = clip
  seconds / median seconds of the whole clip. ``offline``: ``model.encode`` then
  ``model.decode_indices`` on the whole clip. Algorithmic latency: one hop
  (``model.latency_samples``) + (N - 1) hops of buffering.
- ``codes_identical`` / ``max_abs_diff``: all ``--clips`` clips (batch of them) chunked vs
  offline: codes equal, and the largest |output difference| (float32).

Writes ``benchmarks/results/streaming_speed.json`` (one row per chunk size, each with the
machine, date and command).
"""

from __future__ import annotations

import datetime
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _timing as T  # noqa: E402

from vqvae.data.audio import fit_length, peak_normalize, read_wav  # noqa: E402
from vqvae.models import AudioVQVAE  # noqa: E402
from vqvae.models.audio_stream import decode_in_chunks, encode_in_chunks  # noqa: E402
from vqvae.pipeline.run import resolve_config  # noqa: E402
from vqvae.threads import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fsdd-causal.toml"
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"


def synthetic_clips(n: int, length: int) -> torch.Tensor:
    """Harmonics of a gliding pitch plus noise (n, 1, length), peak about 0.9."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(length) / 8000
    f0 = 100 + 150 * torch.rand(n, 1, generator=g)
    phase = 2 * torch.pi * f0 * t * (1 + 0.5 * t)
    x = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.5
    return (x + 0.02 * torch.randn(n, length, generator=g))[:, None]


def clips(args, length: int) -> tuple[torch.Tensor, str]:
    """The first ``--clips`` FSDD test recordings (index 0-4), as the audio data reads them."""
    paths = sorted(Path(args.data).glob("*_[0-4].wav"))[: args.clips] if args.data else []
    if not paths:
        return synthetic_clips(args.clips, length), "synthetic"
    waves = [fit_length(peak_normalize(read_wav(p, 8000)), length)[0] for p in paths]
    return torch.from_numpy(np.stack(waves))[:, None], f"{len(paths)} FSDD test recordings"


def streamed(model: AudioVQVAE, x: torch.Tensor, hops: int):
    """A call that streams clip ``x`` (1, 1, T) through encoder and decoder, ``hops`` at a time."""
    step = hops * model.config.downsample

    def run() -> None:
        encoder, decoder = model.stream_encoder(), model.stream_decoder()
        for i in range(0, x.shape[-1], step):
            decoder.push(encoder.push(x[..., i : i + step]))

    return run


def main(argv: list[str] | None = None) -> int:
    parser = T.benchmark_parser(__doc__, "streaming_speed.json", repeats=3, warmup=1, rounds=2)
    parser.add_argument("--data", default=str(FSDD), help="FSDD recordings (else synthetic)")
    parser.add_argument(
        "--also-threads",
        type=int,
        nargs="*",
        default=[1],
        help="thread counts timed after --threads (default 1: small chunks are a few µs of "
        "arithmetic per layer, where handing work to a second thread costs more)",
    )
    parser.add_argument("--clips", type=int, default=20, help="clips of the equality check")
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG,
        help="the model's config (default configs/fsdd-causal.toml; model.causal is set true)",
    )
    parser.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=[1, 7, 10, 20],
        help="chunk sizes in hops, timed besides the whole clip (default 1 7 10 20)",
    )
    args = T.parse_benchmark_args(parser, argv)
    overrides = ["model.causal=true"]
    if args.quick:  # a small network on short clips
        overrides += ["model.hidden=32", "model.length=1024", "model.window=512"]
        args.clips = 2
    torch.manual_seed(0)
    model = AudioVQVAE(resolve_config(args.config, overrides).model)
    c = model.config
    config = args.config.resolve()
    config_name = str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config)
    x, source = clips(args, c.length)
    with torch.no_grad():
        model.train()(x)  # k-means initialises the codebook from these clips' encoder outputs
    model.eval()

    hops_per_clip = c.length // c.downsample
    chunk_hops = sorted(h for h in {*args.chunks, hops_per_clip} if 1 <= h <= hops_per_clip)
    one = x[:1]  # batch 1
    steps = {f"chunk {h}": streamed(model, one, h) for h in chunk_hops}
    steps["offline"] = lambda: model.decode_indices(model.encode(one))
    timed = []
    for threads in dict.fromkeys([args.threads, *args.also_threads]):  # in order, once each
        torch.set_num_threads(threads)
        times = T.interleaved(steps, args.rounds, args.repeats, args.warmup)
        timed += [(threads, name, seconds) for name, seconds in times.items()]

    torch.set_num_threads(args.threads)
    codes, out = model.encode(x), model.reconstruct(x)
    checks = {}  # chunk hops -> chunked against offline, on every clip
    for hops in chunk_hops:
        chunked = encode_in_chunks(model, x, hops)
        decoded = decode_in_chunks(model, codes, hops)
        checks[hops] = {
            "codes_identical": bool(torch.equal(chunked, codes)),
            "codes_differing": int((chunked != codes).sum()),
            "max_abs_diff": float((decoded - out).abs().max()),
        }
    seconds_per_clip = c.length / c.sample_rate
    machine = {
        "cpu": cpu_name(),
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["python", *sys.argv]),
    }
    rows = []
    for threads, name, seconds in timed:
        hops = None if name == "offline" else int(name.split()[1])
        row = {
            "mode": "offline" if hops is None else "streaming",
            "chunk_hops": hops,
            "chunk_ms": None if hops is None else 1000 * hops * c.downsample / c.sample_rate,
            "algorithmic_latency_ms": 1000 * model.latency_samples / c.sample_rate,
            "median_ms_per_clip": round(T.median_ms(seconds), 3),
            "x_realtime": round(seconds_per_clip / (T.median_ms(seconds) / 1000), 2),
            "runs": len(seconds),
            **checks.get(hops, {}),
        }
        rows.append(
            {
                **row,
                "clip_samples": c.length,
                "sample_rate": c.sample_rate,
                "hop": c.downsample,
                "batch": 1,
                "clips_checked": len(x),
                "clips": source,
                "model": f"{config_name} (hidden {c.hidden}, untrained)",
                **machine,
                **T.machine_settings(threads),
            }
        )
    T.write_rows(args.out, rows)
    head = ["threads", "mode", "chunk (hops)", "chunk ms", "ms per clip", "x real time",
            "codes equal", "max |diff|"]  # fmt: skip
    body = [
        [r["threads"], r["mode"], r["chunk_hops"], r["chunk_ms"], r["median_ms_per_clip"],
         r["x_realtime"], r.get("codes_identical"), r.get("max_abs_diff")]
        for r in rows
    ]  # fmt: skip
    print(T.markdown_table(head, body))
    print(
        f"\nclip {seconds_per_clip:.3f} s, batch 1; codes checked on {len(x)} clips ({source}); "
        f"algorithmic latency {model.latency_samples} samples (one hop, no lookahead) + "
        "(N - 1) hops of buffering for chunks of N hops"
    )
    print(f"threads={args.threads}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
