"""The codec on the whole MNIST test split with a run of the shipped config: bit-exactness
across batch sizes and thread counts, size against the prior's NLL, and speed.

    vqvae train-prior RUN --config configs/mnist.toml --steps 4000   # RUN: configs/mnist.toml
    python benchmarks/codec_mnist.py RUN                              # -> results/codec_mnist.json

1. compress the 10,000 test images (2 threads, batch 64) and again (1 thread, batch 500): the
   two archives must be the same bytes;
2. decompress with 1 thread, batch 500, and with 2 threads, batch 37: the indices must equal
   ``encode``'s, the decoded images (8-bit, as the PNG files hold them) must equal the model's
   ``decode_indices`` of those indices (the codec's float64 decode; the model's own float32
   decode is compared too, counting pixels that differ);
3. decompress the first ``--single`` images one at a time (batch 1): the same indices;
4. payload (stream sizes + streams) against the prior's NLL of the same codes (float32
   ``prior_logits``, the held-out NLL's computation): payload ≤ 1.01 · NLL + 4 bytes per item;
5. images per second of each pass (compress includes the VQ-VAE encoder, decompress the
   decoder).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rate_distortion import cpu_name  # noqa: E402

from vqvae.codec import Archive, Codec, to_uint8  # noqa: E402
from vqvae.data import load_data  # noqa: E402
from vqvae.pipeline.run import RunDir  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--single", type=int, default=300, help="images decoded one at a time")
    p.add_argument("--limit", type=int, help="only the first N test images (smoke test)")
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "codec_mnist.json"
    )
    args = p.parse_args()
    _, spec = RunDir(args.run).read_config()
    part = load_data(spec).test
    images, labels = part.images[: args.limit], part.labels[: args.limit]
    n = len(images)
    today = datetime.date.today().isoformat()
    result: dict = {"run": args.run, "data": spec, "items": n, "cpu": cpu_name(), "date": today}

    torch.set_num_threads(2)
    codec = Codec.from_run(args.run, batch=64)
    codes, encode_s = timed(lambda: codec.encode(images))
    archive, code_s = timed(lambda: codec.compress_codes(codes, labels))
    result["compress_2threads_batch64"] = {
        "seconds": encode_s + code_s,
        "encode_seconds": encode_s,
        "images_per_second": n / (encode_s + code_s),
    }
    torch.set_num_threads(1)
    codec.set_batch(500)
    again, s = timed(lambda: codec.compress_codes(codec.encode(images), labels))
    result["compress_1thread_batch500"] = {"seconds": s, "images_per_second": n / s}
    result["same_archive_bytes"] = again == archive

    parsed = Archive.from_bytes(archive, "archive")
    nll_bits = float(codec.item_bits(codes, labels).sum())
    result["size"] = {
        "archive_bytes": len(archive),
        "payload_bytes": parsed.payload_bytes,
        "header_bytes": len(archive) - parsed.payload_bytes,
        "bytes_per_image": len(archive) / n,
        "bits_per_pixel": 8 * len(archive) / (n * 784),
        "prior_nll_bytes": nll_bits / 8,
        "prior_nll_bits_per_code": nll_bits / codes[0].size,
        "payload_over_nll": 8 * parsed.payload_bytes / nll_bits,
        "bound_bytes": 1.01 * nll_bits / 8 + 4 * n,
        "within_bound": parsed.payload_bytes <= 1.01 * nll_bits / 8 + 4 * n,
        "extra_bytes_per_image": (parsed.payload_bytes - nll_bits / 8) / n,
    }
    with torch.no_grad():
        direct32 = np.concatenate([
            codec.model.decode_indices(torch.from_numpy(codes[0][i : i + 500])).clamp(0, 1).numpy()
            for i in range(0, n, 500)
        ])  # fmt: skip
    reference = to_uint8(codec.decode(codes))  # decode_indices by the float64 copy
    for threads, batch in ((1, 500), (2, 37)):
        torch.set_num_threads(threads)
        codec.set_batch(batch)
        (indices, decoded), s = timed(lambda: codec.decompress(archive))
        u8 = to_uint8(decoded)
        result[f"decompress_{threads}threads_batch{batch}"] = {
            "seconds": s,
            "images_per_second": n / s,
            "indices_equal_encode": bool(np.array_equal(indices[0], codes[0])),
            "png_equal_decode_indices": bool(np.array_equal(u8, reference)),
            "pixels_differing_from_float32_decode": int((u8 != to_uint8(direct32)).sum()),
        }
        print(json.dumps(result), flush=True)
    torch.set_num_threads(2)
    m = min(args.single, n)
    head = codec.compress_codes([codes[0][:m]], labels[:m])
    codec.set_batch(1)
    (indices, _), s = timed(lambda: codec.decompress(head))
    result["decompress_2threads_batch1"] = {
        "items": m,
        "seconds": s,
        "images_per_second": m / s,
        "indices_equal_encode": bool(np.array_equal(indices[0], codes[0][:m])),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
