"""Training beside other CPU work: steps per minute of the shipped MNIST training alone, beside
one and two single-threaded busy loops (``python3 -c "while True: pass"``), and two
``vqvae train`` processes at once, for the thread policy of ``vqvae.threads`` ("auto") and for
the behaviour before it ("before": as many threads as CPUs, OpenMP's default spin-then-sleep
waiting), in one run.

    python benchmarks/under_load.py --data mnist:../shared/data/mnist --minutes 1
    python benchmarks/under_load.py --data digits --minutes 0.2 --policies auto   # a smoke test

Each measurement is one ``vqvae train --config configs/mnist.toml --minutes M`` process (for
"before" the same command with ``--threads <CPUs>``, PyTorch loaded before the command sets
``OMP_WAIT_POLICY``, so OpenMP keeps its default). Steps per minute = the final step / the
training seconds the command prints (data loading and start-up are outside the budget). The busy
loops start before the training and end after it. ``fraction_of_alone`` divides by the same
policy's alone figure. Writes ``benchmarks/results/under_load.json``: rows ``{situation, policy,
steps_per_min, fraction_of_alone, threads}`` (``threads``: the counts the run's log recorded),
with the CPU, date and budget in each row. Needs the machine to itself: nothing else may run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vqvae.threads import cpu_name

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SITUATIONS = ("alone", "beside 1 busy loop", "beside 2 busy loops", "2 trainings at once")
BUSY = {"alone": 0, "beside 1 busy loop": 1, "beside 2 busy loops": 2, "2 trainings at once": 0}
FINISHED = re.compile(r"training (?:finished|interrupted at) step (\d+) \((\d+) s\)")
BEFORE = "import sys, torch; from vqvae.cli.main import main; sys.exit(main(sys.argv[1:]))"


def train_command(policy: str, args: argparse.Namespace, out: Path) -> list[str]:
    common = ["train", "--data", args.data, "--config", str(args.config), "--out", str(out)]
    common += ["--minutes", str(args.minutes), "train.checkpoint_every=0"]
    if policy == "before":
        return [sys.executable, "-c", BEFORE, *common, "--threads", str(os.cpu_count() or 1)]
    return [sys.executable, "-m", "vqvae.cli.main", *common]


def clean_env() -> dict[str, str]:
    """The environment a user has by default: no thread settings of ours or OpenMP's."""
    env = dict(os.environ)
    for name in ("VQVAE_THREADS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"):
        env.pop(name, None)
    return env


def logged_threads(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    return [r["threads/count"] for r in rows if "threads/count" in r]


def measure(policy: str, situation: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """Steps per minute of each training process in ``situation``."""
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BUSY[situation])
    ]
    try:
        time.sleep(1.0 if busy else 0.0)  # the loops are running before training starts
        n = 2 if situation == "2 trainings at once" else 1
        runs = [work / f"{policy}-{situation.replace(' ', '_')}-{i}" for i in range(n)]
        procs = [
            subprocess.Popen(
                train_command(policy, args, run),
                cwd=ROOT,
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for run in runs
        ]
        outputs = [p.communicate() for p in procs]
    finally:
        for p in busy:
            p.kill()
            p.wait()
    results = []
    for run, proc, (stdout, stderr) in zip(runs, procs, outputs, strict=True):
        match = FINISHED.search(stdout)
        if proc.returncode != 0 or match is None:
            raise SystemExit(f"{policy}, {situation}: exit {proc.returncode}\n{stdout}{stderr}")
        step, seconds = int(match[1]), int(match[2])
        results.append(
            {"steps_per_min": round(step / seconds * 60, 1), "threads": logged_threads(run)}
        )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="mnist:../shared/data/mnist")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "mnist.toml")
    p.add_argument("--minutes", type=float, default=1.0, help="training budget per measurement")
    p.add_argument("--policies", nargs="+", default=["auto", "before"], choices=["auto", "before"])
    p.add_argument("--out", type=Path, default=RESULTS / "under_load.json")
    args = p.parse_args(argv)

    rows = []
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="under_load-") as tmp:
        for policy in args.policies:
            alone = None
            for situation in SITUATIONS:
                for i, r in enumerate(measure(policy, situation, args, Path(tmp))):
                    if situation == "alone":
                        alone = r["steps_per_min"]
                    name = (
                        situation
                        if situation != "2 trainings at once"
                        else f"{situation} (#{i + 1})"
                    )
                    row = {
                        "situation": name,
                        "policy": policy,
                        "steps_per_min": r["steps_per_min"],
                        "fraction_of_alone": round(r["steps_per_min"] / alone, 3),
                        "threads": sorted(set(r["threads"])),
                        "minutes": args.minutes,
                        "data": args.data,
                        "cpu": cpu_name(),
                        "cpus": os.cpu_count(),
                        "date": when,
                    }
                    rows.append(row)
                    print(
                        f"{policy:6s} {name:26s} {row['steps_per_min']:8.1f} steps/min "
                        f"{row['fraction_of_alone']:6.1%} of alone  threads {row['threads']}",
                        flush=True,
                    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(rows, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
