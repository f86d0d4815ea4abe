"""What the speed benchmarks share: medians of timed calls, peak-memory growth, one measurement
per fresh subprocess under a memory cap, JSON/Markdown output, and the plain reference
quantizer (cdist/argmin/one-hot EMA, the way the public PyTorch ports of the Sonnet VQ-VAE
write it) that ours is compared against.

Not a library module: the scripts next to it import it as ``_timing`` (they run as files).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RESULTS = Path(__file__).parent / "results"
CHILD_FLAG = "--_child"  # hidden argument: "measure this one case and print JSON"
OOM_MARKERS = ("can't allocate memory", "MemoryError", "std::bad_alloc", "out of memory")


# --- timing --------------------------------------------------------------------------------------
def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def training_step(
    model: nn.Module, batches: Sequence[tuple], lr: float = 1e-3
) -> Callable[[], None]:
    """One AdamW step of ``model.training_losses`` per call, cycling through ``batches``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    calls = 0

    def step() -> None:
        nonlocal calls
        loss = model.training_losses(batches[calls % len(batches)])["loss"]
        calls += 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def interleaved(
    steps: dict[str, Callable[[], object]],
    rounds: int,
    repeats: int,
    warmup: int,
    timed_runs: dict[str, Callable[[int], list[float]]] | None = None,
) -> dict[str, list[float]]:
    """Time every step side by side: warm each up, then ``rounds`` rounds of ``repeats`` calls
    of each in turn, so a slow phase of a shared machine hits every implementation alike.

    ``timed_runs`` are implementations that time their own steps (a training loop that owns its
    optimiser): ``run(n)`` performs n steps and returns their n durations in seconds.
    """
    timed_runs = timed_runs or {}
    for fn in steps.values():
        time_calls(fn, 0, warmup)
    for run in timed_runs.values():
        run(warmup)
    times: dict[str, list[float]] = {name: [] for name in [*steps, *timed_runs]}
    for _ in range(rounds):
        for name, fn in steps.items():
            times[name] += time_calls(fn, repeats)
        for name, run in timed_runs.items():
            times[name] += run(repeats)
    return times


def median_ms(seconds: Sequence[float]) -> float:
    return 1000.0 * statistics.median(seconds)


# --- memory --------------------------------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss is not None else peak_rss_mb()


def reset_peak_rss() -> None:
    """Reset the high-water mark of resident memory (Linux >= 4.0), so that the peak read later
    belongs to what ran after this point, not to imports or set-up."""
    gc.collect()
    # Without it (not Linux), peak_rss_mb is the process-lifetime maximum: an upper bound.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """High-water resident memory since the last ``reset_peak_rss`` (VmHWM), else ru_maxrss."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def cap_address_space(gib: float) -> None:
    """Limit this process's address space so that running out of memory raises an error here
    instead of pushing the machine into swap or the OOM killer."""
    limit = int(gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def is_oom(error: BaseException | str) -> bool:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return isinstance(error, MemoryError) or any(m in text for m in OOM_MARKERS)


# --- one case per fresh process ------------------------------------------------------------------
def run_child(script: str | Path, case: dict, timeout_s: float | None = None) -> dict:
    """Run ``script --_child CASE_JSON`` in a fresh interpreter and return the JSON it prints
    last; ``{"oom": True}`` when it ran out of memory, ``{"error": ...}`` for other failures."""
    cmd = [sys.executable, str(script), CHILD_FLAG, json.dumps(case)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    if is_oom(done.stderr) or done.returncode in (-9, 137):  # -9: killed (likely the OOM killer)
        return {"oom": True}
    return {"error": " | ".join(tail) or f"exit status {done.returncode}"}


# --- command line --------------------------------------------------------------------------------
def benchmark_parser(
    doc: str, out_name: str, *, repeats: int, warmup: int, rounds: int
) -> argparse.ArgumentParser:
    """The options every speed script has; ``doc`` (the script's docstring) is its --help."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed calls per round")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls first")
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 1 round")
    parser.add_argument("--out", default=str(RESULTS / out_name), help="JSON rows written here")
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parsed options; ``--quick`` also cuts rounds, repeats and warm-up to 1, 2 and 1."""
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.warmup = 1, 2, 1
    return args


# --- output --------------------------------------------------------------------------------------
def write_rows(path: str | Path, rows: list[dict]) -> Path:
    """Write ``rows`` as a JSON list, atomically (an interrupted run keeps the previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def machine_settings(threads: int) -> dict:
    return {"threads": threads, "torch": torch.__version__, "cpu_count": os.cpu_count()}


# --- the plain reference quantizer ---------------------------------------------------------------
class PlainEMAQuantizer(nn.Module):
    """EMA vector quantizer written the way the public PyTorch port of the Sonnet example
    (zalandoresearch/pytorch-vq-vae, ``VectorQuantizerEMA``) writes it: the input permuted to
    channels-last and made contiguous, the full distance matrix (cdist), argmin, a one-hot
    (N, K) assignment matrix filled by ``scatter_``, the codes and the EMA statistics as matrix
    products with it (van den Oord et al. 2017, appendix A.1), the batch perplexity from the
    one-hot mean on every step, and the output permuted back to a contiguous (B, D, *S) tensor.
    Codebook and EMA sums start normal-random, the cluster sizes at zero, as in the port.

    Returns ``(quantized (B, D, *S), commitment loss β·||z - sg[e]||², indices (B, *S))``; the
    perplexity is kept in ``last_perplexity``.
    """

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, beta: float = 0.25):
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.beta, self.eps = decay, beta, 1e-5
        codebook = torch.randn(codebook_size, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_sum", codebook.clone())
        self.last_perplexity = torch.zeros(())

    def assign(self, flat: Tensor) -> Tensor:
        """(N, D) -> (N,) index of the nearest code."""
        return torch.cdist(flat, self.codebook).argmin(dim=1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dims = list(range(z.dim()))
        inputs = z.permute(0, *dims[2:], 1).contiguous()  # (B, *S, D)
        flat = inputs.view(-1, self.dim)  # (N, D)
        indices = self.assign(flat.detach())  # (N,)
        one_hot = torch.zeros(flat.shape[0], self.codebook_size, device=z.device)
        one_hot.scatter_(1, indices[:, None], 1)  # (N, K)
        codes = one_hot @ self.codebook  # (N, D)
        if self.training:
            with torch.no_grad():
                self.cluster_size.mul_(self.decay).add_(one_hot.sum(0), alpha=1 - self.decay)
                self.embed_sum.mul_(self.decay).add_(one_hot.t() @ flat, alpha=1 - self.decay)
                n = self.cluster_size.sum()  # Laplace smoothing keeps unused codes finite
                size = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
                self.codebook.copy_(self.embed_sum / size[:, None])
        loss = self.beta * F.mse_loss(flat, codes.detach())
        quantized = flat + (codes - flat).detach()  # straight-through
        probs = one_hot.mean(0)
        self.last_perplexity = torch.exp(-torch.sum(probs * torch.log(probs + 1e-10)))
        out = quantized.view(inputs.shape).permute(0, -1, *range(1, z.dim() - 1)).contiguous()
        return out, loss, indices.view(inputs.shape[:-1])
