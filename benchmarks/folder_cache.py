"""First load and cached reload of an image folder (``folder:`` specs, ``vqvae.data.folder_cache``).

    flock /tmp/vqvae-cpu.lock python benchmarks/folder_cache.py ../shared/data/cifar10-jpeg

Each load runs in a fresh process (as a new ``vqvae train`` would), with its own empty cache
folder: the first decodes every image and writes the cache file, the next ones read it. Times
are ``load_data``'s wall-clock seconds inside the process (interpreter start and imports not
counted) and the whole process's. Writes ``benchmarks/results/folder_cache_cifar10.json`` (or
``--out``) naming the CPU and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vqvae.threads import cpu_name

CHILD = "--child"


def child(spec: str) -> None:
    start = time.perf_counter()
    from vqvae.data import load_data

    imported = time.perf_counter()
    splits = load_data(spec)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "load_s": done - imported,
                "import_s": imported - start,
                "train": list(splits.train.images.shape),
                "test": list(splits.test.images.shape),
                "checksum": float(splits.train.images[:100].sum() + splits.test.images[:100].sum()),
            }
        )
    )


def main() -> int:
    if sys.argv[1:2] == [CHILD]:
        child(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/folder_cache_cifar10.json")
    args = parser.parse_args()
    spec = f"folder:{args.folder}"
    with tempfile.TemporaryDirectory(prefix="folder-cache-bench-") as cache:
        env = {**os.environ, "VQVAE_FOLDER_CACHE": cache}
        rows = []
        for i in range(1 + args.reloads):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, CHILD, spec],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["process_s"] = time.perf_counter() - start
            row["kind"] = "first" if i == 0 else "cached"
            rows.append(row)
            print(
                f"{row['kind']:>6}: load_data {row['load_s']:.2f} s "
                f"(process {row['process_s']:.2f} s)",
                flush=True,
            )
        files = list(Path(cache).glob("*.npz"))
        cache_mb = sum(f.stat().st_size for f in files) / 2**20
    assert len({r["checksum"] for r in rows}) == 1, "a cached load differs from the first"
    result = {
        "data": spec,
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "train_shape": rows[0]["train"],
        "test_shape": rows[0]["test"],
        "first_load_s": round(rows[0]["load_s"], 2),
        "cached_load_s": [round(r["load_s"], 2) for r in rows[1:]],
        "first_process_s": round(rows[0]["process_s"], 2),
        "cached_process_s": [round(r["process_s"], 2) for r in rows[1:]],
        "cache_file_mb": round(cache_mb, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
