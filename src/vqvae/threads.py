"""How many threads a vqvae process computes with, and how idle threads wait.

PyTorch starts one OpenMP thread per CPU core and, by default, lets a thread that has run out
of work spin for a while before it sleeps. On a machine of its own that is the fastest choice.
Beside other CPU work it collapses: the spinning threads burn the time slices the other work
needs, and every parallel operation waits at its barrier for the thread the scheduler has just
preempted. Measured on a 2-core machine with the shipped MNIST training (steps in one minute,
issue #18): alone 347; beside one single-threaded busy loop 100 (29%), 153 with passive waiting,
189 with one thread.

The policy the ``vqvae`` command applies (``apply_policy``), in one line each:

* threads come from the CPUs this process may run on: its CPU affinity, capped by a cgroup CPU
  quota (a container limited to 2 CPUs on a 64-core host gets 2, not 64);
* idle OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, set before PyTorch loads
  unless the user set it): no spinning while other processes want the CPU;
* in "auto" the thread count leaves room for the other runnable work it sees: CPUs minus the
  threads of other processes that are running or waiting to run (sampled from ``/proc``), at
  least one; a training loop looks again every few seconds (``ThreadPolicy.retune``), so a
  run speeds back up when the other work ends;
* ``--threads N``, else ``VQVAE_THREADS=N``, else ``OMP_NUM_THREADS=N`` fix the count (as
  asked, even above the CPUs available) and switch the watching off; ``VQVAE_THREADS=auto`` is
  the default.

A training loop prints the policy once per process (stderr) and writes it, and every change,
to the run's ``log.jsonl`` (``threads/policy``, ``threads/count``).

The fused C++ kernels (``vqvae.quantizers.native``) ask ``torch.get_num_threads()`` at every call,
so they follow the same count. The library itself changes none of this: the policy is
process-wide, so it is applied by the process's owner (the ``vqvae`` command, or your program
calling ``apply_policy``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vqvae.errors import ConfigError

ENV = "VQVAE_THREADS"
WAIT_ENV = "OMP_WAIT_POLICY"
RETUNE_SECONDS = 5.0  # how often a training loop looks at the other load again
SAMPLES, SAMPLE_GAP = 3, 0.002  # /proc snapshots per look, seconds between them


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 / v1 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows: what
    benchmark results and model cards record about the machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cgroup_quota() -> float | None:
    """The CPU quota in CPUs (quota / period), or None when there is none."""
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        root = Path("/sys/fs/cgroup/cpu")
        quota = int((root / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def other_runnable() -> float:
    """Threads of other processes that are running or waiting for a CPU, averaged over a few
    snapshots of ``/proc`` (the processes this one can see: its container's, or the machine's)."""
    own = str(os.getpid())
    counts = []
    for i in range(SAMPLES):
        if i:
            time.sleep(SAMPLE_GAP)
        counts.append(_runnable_threads(exclude=own))
    return sum(counts) / len(counts)


def _runnable_threads(exclude: str) -> int:
    running = 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and p != exclude]
    except OSError:  # no /proc: nothing to see
        return 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:  # ended meanwhile, or not ours to read
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            # "pid (comm) S ...": the state follows the last ')' (comm may hold anything)
            if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"R":
                running += 1
    return running


def threads_beside(busy: float, cpus: int) -> int:
    """Threads that take the CPUs the other ``busy`` runnable threads leave free; at least 1."""
    return max(1, min(cpus, round(cpus - busy)))


def requested_threads(option: int | None) -> tuple[int | None, str]:
    """The fixed thread count asked for, and by what: ``--threads`` first, then ``VQVAE_THREADS``
    (a positive integer or "auto"), then OpenMP's own ``OMP_NUM_THREADS``; ``(None, "auto")``
    when none fixes it."""
    if option is not None:
        if option < 1:
            raise ConfigError(f"--threads must be >= 1, got {option}")
        return option, "--threads"
    value = os.environ.get(ENV, "auto").strip().lower()
    if value not in ("", "auto"):
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{ENV} must be a positive integer or 'auto', got {value!r}")
        return int(value), ENV
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:  # a user's setting for every OpenMP program
        return int(omp), "OMP_NUM_THREADS"
    return None, "auto"


def prefer_passive_wait() -> None:
    """Let idle OpenMP threads sleep instead of spinning, unless the user chose otherwise.
    Takes effect only if called before PyTorch (and its OpenMP runtime) is loaded."""
    os.environ.setdefault(WAIT_ENV, "PASSIVE")


@dataclass
class ThreadPolicy:
    """The thread count in force, why, and (in auto) when to look at the other load again."""

    threads: int
    cpus: int  # available to this process
    source: str  # "auto", "--threads" or "VQVAE_THREADS"
    wait: str  # the OpenMP wait policy in force
    busy: float = 0.0  # other runnable threads seen at the last look
    _next_look: float = field(default=0.0, repr=False)

    @property
    def adaptive(self) -> bool:
        return self.source == "auto"

    def describe(self) -> str:
        if self.adaptive:
            how = f"auto: {self.cpus} CPUs available, {self.busy:.1f} busy with other work"
        else:
            how = f"fixed by {self.source}; {self.cpus} CPUs available"
        return f"{self.threads} compute thread(s) ({how}); idle threads wait {self.wait.lower()}"

    def announce(self) -> None:
        """Print the policy to stderr, once per process."""
        global _ANNOUNCED
        if not _ANNOUNCED:
            _ANNOUNCED = True
            print(f"vqvae: {self.describe()}", file=sys.stderr)

    def retune(self, now: float | None = None) -> bool:
        """In auto, every ``RETUNE_SECONDS``: look at the other load and follow it. Returns
        whether the thread count changed."""
        now = time.monotonic() if now is None else now
        if not self.adaptive or now < self._next_look:
            return False
        started = time.monotonic()
        self.busy = other_runnable()
        # A look costs ~10-30 ms here (146 tasks); on a host with many thousands of tasks it
        # costs more, so looks are spaced to keep them under 0.5% of the time.
        self._next_look = now + max(RETUNE_SECONDS, 200 * (time.monotonic() - started))
        threads = threads_beside(self.busy, self.cpus)
        if threads == self.threads:
            return False
        self.threads = threads
        _set_torch_threads(threads)
        return True


_POLICY: ThreadPolicy | None = None
_ANNOUNCED = False  # the policy was printed


def apply_policy(option: int | None = None) -> ThreadPolicy:
    """Choose the thread count (``option`` = ``--threads``), apply it to PyTorch, and make it the
    process's policy (``current_policy``), which training loops retune."""
    global _POLICY
    fixed, source = requested_threads(option)
    cpus = available_cpus()
    wait = os.environ.get(WAIT_ENV) or "OpenMP default"
    if fixed is not None:
        policy = ThreadPolicy(fixed, cpus, source, wait)
    else:
        busy = other_runnable()
        policy = ThreadPolicy(threads_beside(busy, cpus), cpus, source, wait, busy)
        policy._next_look = time.monotonic() + RETUNE_SECONDS
    _set_torch_threads(policy.threads)
    _POLICY = policy
    return policy


def current_policy() -> ThreadPolicy | None:
    """The policy ``apply_policy`` set in this process; None when nobody set one."""
    return _POLICY


def _set_torch_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
