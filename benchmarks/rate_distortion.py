"""Rate–distortion of the codec (``vqvae compress``) against Pillow's JPEG, WebP and PNG on the
MNIST and Fashion-MNIST test splits, in one run.

    python benchmarks/rate_distortion.py --runs /tmp/rd-runs            # trains the ladder once
    python benchmarks/rate_distortion.py --runs /tmp/rd-runs --quick    # a smoke test

Ours: a small ladder of models per data set (code grid × K; each a VQ-VAE trained with the
data set's shipped config for ``--steps`` steps and a PixelCNN prior for ``--prior-steps``,
trained once into ``--runs`` and reused), plus ``--extra DATA=RUN`` runs (e.g. the shipped
MNIST model with its prior). Each codes the whole test split into one archive: bytes per image
= archive bytes / images, header included; the images are the decoded archive written as 8-bit
PNGs would hold them. Theirs: one file per image — JPEG (qualities 1–95), WebP (lossy,
qualities 0–100, method 6; also counted without its 12-byte RIFF file header) and lossless PNG
(optimize). All: PSNR from the mean MSE over the test split (pixels in [0, 1]), SSIM the mean
over images (``vqvae.metrics.ssim``), bits per pixel = 8 · bytes / 784.

"At equal PSNR": for each of our points, JPEG's and WebP's bytes at our PSNR, interpolated
linearly in (PSNR, log bytes) between the two sweep points around it (None outside the sweep),
and our bytes over the smaller of the two. Writes ``benchmarks/results/rate_distortion.json``
(rows ``{data, codec, setting, bytes_per_item, bpp, psnr, ssim}`` and the comparison) and
``rate_distortion.png`` (bpp against PSNR).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqvae.codec import Codec, to_uint8
from vqvae.data import load_data
from vqvae.metrics import psnr_from_mse, ssim
from vqvae.threads import cpu_name

ROOT = Path(__file__).resolve().parent.parent
DATA = {
    "mnist": ("mnist:../shared/data/mnist", "configs/mnist.toml"),
    "fashion-mnist": ("fashion-mnist:../shared/data/fashion-mnist", "configs/fashion-mnist.toml"),
}
# (downsample, K): 7×7 grids of 32, 128, 512 codes (the shipped configs' grid)
LADDER = [(4, 32), (4, 128), (4, 512)]
PRIOR = ["prior.channels=32", "prior.layers=6", "prior.kernel_size=3", "prior.dropout=0.1"]
JPEG_QUALITIES = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
WEBP_QUALITIES = [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
RIFF_HEADER = 12  # "RIFF", file size, "WEBP"


def vqvae(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "vqvae.cli.main", *args], cwd=ROOT, check=True)


def train_ladder(runs: Path, data: str, steps: int, prior_steps: int) -> list[tuple[str, Path]]:
    spec, config = DATA[data]
    out = []
    for down, k in LADDER:
        run = runs / f"{data}-d{down}-k{k}"
        if not (run / "prior" / "model" / "model.safetensors").is_file():
            if not (run / "model" / "model.safetensors").is_file():
                vqvae("train", "--data", spec, "--out", str(run), "--config", config,
                      "--steps", str(steps), f"model.downsample={down}",
                      f"model.quantizer.codebook_size={k}")  # fmt: skip
            vqvae("train-prior", str(run), "--steps", str(prior_steps), *PRIOR)
        grid = 28 // down
        out.append((f"{grid}x{grid} K={k}, {steps}+{prior_steps} steps", run))
    return out


def scores(images: np.ndarray, decoded_u8: np.ndarray) -> tuple[float, float]:
    """PSNR from the mean MSE and mean SSIM of 8-bit decoded images (N, H, W, C) against the
    originals (N, C, H, W) in [0, 1]."""
    ref = torch.from_numpy(images.astype(np.float32))
    est = torch.from_numpy(decoded_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    mse = float((est - ref).double().pow(2).mean())
    s = sum(
        float(ssim(est[i : i + 1000], ref[i : i + 1000]).double().sum())
        for i in range(0, len(ref), 1000)
    )
    return psnr_from_mse(mse), s / len(ref)


def row(data: str, codec: str, setting: str, bytes_per_item: float, images, decoded_u8) -> dict:
    psnr, s = scores(images, decoded_u8)
    pixels = images.shape[2] * images.shape[3]
    return {
        "data": data,
        "codec": codec,
        "setting": setting,
        "bytes_per_item": bytes_per_item,
        "bpp": 8 * bytes_per_item / pixels,
        "psnr": psnr,
        "ssim": s,
    }


def pillow_rows(data: str, images: np.ndarray) -> list[dict]:
    """One file per image for each setting; decoded back with Pillow."""
    u8 = to_uint8(images)[..., 0]  # (N, H, W) grey
    rows = []

    def sweep(fmt: str, settings, **kw) -> None:
        for q in settings:
            sizes, decoded = [], []
            for img in u8:
                buf = io.BytesIO()
                Image.fromarray(img).save(
                    buf, format=fmt, **({"quality": q} if q is not None else {}), **kw
                )
                sizes.append(buf.tell())
                buf.seek(0)
                decoded.append(np.asarray(Image.open(buf).convert("L")))
            dec = np.stack(decoded)[..., None]  # (N, H, W, 1)
            name = {"JPEG": "jpeg", "WEBP": "webp", "PNG": "png"}[fmt]
            setting = "lossless" if q is None else f"quality={q}"
            rows.append(row(data, name, setting, float(np.mean(sizes)), images, dec))
            if fmt == "WEBP":
                rows.append(
                    row(
                        data,
                        "webp_no_riff",
                        setting,
                        float(np.mean(sizes)) - RIFF_HEADER,
                        images,
                        dec,
                    )
                )

    sweep("JPEG", JPEG_QUALITIES)
    sweep("WEBP", WEBP_QUALITIES, method=6)
    sweep("PNG", [None], optimize=True)
    return rows


def our_row(data: str, setting: str, run: Path, part, verify: bool) -> tuple[dict, dict]:
    """Our point: the test split coded into one archive; its images are the model's decode of
    the codes (what decompress gives: ``benchmarks/codec_mnist.py`` checks that bit for bit;
    ``verify`` decompresses here too)."""
    codec = Codec.from_run(run, batch=500)
    start = time.perf_counter()
    codes = codec.encode(part.images)
    labels = codec.coded_labels(codes, part.labels)
    archive = codec.compress_codes(codes, labels)
    compress_s = time.perf_counter() - start
    decoded = codec.decode(codes)
    extra: dict = {"run": str(run), "compress_s": compress_s}
    if verify:
        start = time.perf_counter()
        indices, decompressed = codec.decompress(archive)
        extra["decompress_s"] = time.perf_counter() - start
        extra["exact"] = all(np.array_equal(a, b) for a, b in zip(indices, codes, strict=True))
        extra["exact"] &= bool(np.array_equal(to_uint8(decompressed), to_uint8(decoded)))
    nll = float(codec.item_bits(codes, labels).sum())
    extra["nll_bytes_per_item"] = nll / 8 / len(part.images)
    r = row(data, "vqvae", setting, len(archive) / len(part.images), part.images, to_uint8(decoded))
    return r, extra


def at_psnr(rows: list[dict], psnr: float) -> float | None:
    """Bytes per item of a sweep at ``psnr``, linear in (PSNR, log bytes) between neighbours."""
    pts = sorted((r["psnr"], r["bytes_per_item"]) for r in rows)
    for (p0, b0), (p1, b1) in zip(pts, pts[1:], strict=False):
        if p0 <= psnr <= p1 and p1 > p0:
            w = (psnr - p0) / (p1 - p0)
            return float(np.exp((1 - w) * np.log(b0) + w * np.log(b1)))
    return None


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["data"] for r in rows})
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(6 * len(datasets), 4.5), layout="constrained"
    )
    for ax, data in zip(np.atleast_1d(axes), datasets, strict=True):
        for codec, style in (
            ("vqvae", "o-"),
            ("jpeg", "s--"),
            ("webp", "^--"),
            ("webp_no_riff", "v:"),
            ("png", "*"),
        ):
            pts = sorted(
                (r["bpp"], r["psnr"]) for r in rows if r["data"] == data and r["codec"] == codec
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=codec)
        ax.set(
            xscale="log", xlabel="bits per pixel", ylabel="PSNR (dB)", title=f"{data} test split"
        )
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, type=Path, help="folder of the ladder's runs (reused)")
    p.add_argument("--steps", type=int, default=1500, help="VQ-VAE steps of each ladder run")
    p.add_argument("--prior-steps", type=int, default=1500)
    p.add_argument("--extra", action="append", default=[], metavar="DATA=RUN", help="another run")
    p.add_argument("--verify", action="store_true", help="also decompress every archive")
    p.add_argument("--quick", action="store_true", help="smoke test: 200 images, 1 ladder point")
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "rate_distortion.json"
    )
    args = p.parse_args(argv)
    global LADDER
    if args.quick:
        LADDER = LADDER[:1]
    extra = [tuple(e.split("=", 1)) for e in args.extra]
    rows, ours = [], []
    for data, (spec, _) in DATA.items():
        part = load_data(spec).test
        if args.quick:
            part.images, part.labels = part.images[:200], part.labels[:200]
        runs = train_ladder(args.runs, data, args.steps, args.prior_steps)
        runs += [(f"shipped config, {Path(run).name}", Path(run)) for d, run in extra if d == data]
        for setting, run in runs:
            r, info = our_row(data, setting, run, part, args.verify or args.quick)
            rows.append(r)
            ours.append({**r, **info})
            print(json.dumps({**r, **info}))
        theirs = pillow_rows(data, part.images)
        rows += theirs
    comparison = []
    for r in ours:
        same = [x for x in rows if x["data"] == r["data"]]
        jpeg = at_psnr([x for x in same if x["codec"] == "jpeg"], r["psnr"])
        webp = at_psnr([x for x in same if x["codec"] == "webp"], r["psnr"])
        webp_nr = at_psnr([x for x in same if x["codec"] == "webp_no_riff"], r["psnr"])
        best = min((b for b in (jpeg, webp) if b is not None), default=None)
        comparison.append({
            "data": r["data"], "setting": r["setting"], "psnr": r["psnr"], "ssim": r["ssim"],
            "ours_bytes": r["bytes_per_item"], "jpeg_bytes_at_psnr": jpeg,
            "webp_bytes_at_psnr": webp, "webp_no_riff_bytes_at_psnr": webp_nr,
            "ours_over_best": None if best is None else r["bytes_per_item"] / best,
        })  # fmt: skip
    for c in comparison:
        print(json.dumps(c))
    result = {
        "benchmark": "rate_distortion",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "quick": args.quick,
        "steps": args.steps,
        "prior_steps": args.prior_steps,
        "prior": PRIOR,
        "rows": rows,
        "ours": ours,
        "comparison": comparison,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
