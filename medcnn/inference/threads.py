"""CPU thread policy: how many threads one case uses, decided per case.

PyTorch takes one OpenMP thread per core by default and its OpenMP runtime (GNU libgomp
in the Linux wheels) spins between parallel regions. On an idle machine that is the
fastest choice; on a busy one (other jobs, several batch workers, a notebook kernel
beside a training run) a spinning thread that lost its core stalls every other thread at
the next barrier, and a prediction that takes 0.4 s alone can take a minute.

medcnn's policy, applied by :class:`medcnn.inference.Segmenter` around each prediction:

* ``threads="auto"`` (default): never more than torch is set to use
  (``torch.get_num_threads()``: torch's default of one thread per physical core, or what
  the caller set), nor than the cores this process may run on (its CPU affinity, capped
  by a cgroup CPU quota) divided by the number of parallel workers of the batch (so
  workers x threads <= cores), nor than the cores other processes left free since the
  last decision (measured from ``/proc/stat`` on exactly the CPUs of the affinity set,
  this process's own CPU time subtracted; where it cannot be read the load is taken as
  0); at least 1.
* ``threads=N``: exactly N threads, whatever the load.
* The threads are set for the prediction only (``torch.set_num_threads`` and the BLAS
  pools through threadpoolctl) and restored afterwards.
* Waiting: medcnn leaves ``OMP_WAIT_POLICY`` (read by the OpenMP runtime once, when torch
  is first imported) as the user set it. Passive waiting (``PASSIVE``: threads sleep
  instead of spinning) was measured and is not the default: on an idle 2-core AVX2 CPU it
  made the default cardiac model's prediction 0.97 s instead of 0.69 s, and on a busy
  machine it gained nothing once the thread count follows the load (1.50 s vs 1.52 s,
  one thread chosen either way; ``benchmarks/bench_threads.py``, docs/inference.md).
  Set it yourself before importing torch where cases are long and the load changes
  within one.

The decision and its reason are returned as :class:`ThreadChoice` and recorded in each
prediction's ``info["threads"]`` (and so in the reports' provenance).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

from medcnn.errors import ConfigError

__all__ = ["ThreadChoice", "ThreadPolicy", "usable_cores", "cpu_threads", "parse_threads", "WAIT_POLICY_ENV"]

#: The OpenMP wait-policy environment variable (recorded in each decision; medcnn never sets it).
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"

# A load sample older than this is not used: the next decision measures afresh.
_MAX_SAMPLE_AGE_S = 30.0
# Length of a fresh measurement (the kernel counts CPU time in 10 ms ticks).
_FRESH_SAMPLE_S = 0.1


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup CPU quota (containers started with ``--cpus``), or None."""
    import math

    candidates = (("/sys/fs/cgroup/cpu.max", None),
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    for quota_file, period_file in candidates:
        try:
            with open(quota_file, encoding="ascii") as f:
                parts = f.read().split()
            if period_file is not None:
                with open(period_file, encoding="ascii") as f:
                    parts = parts[:1] + f.read().split()[:1]
        except OSError:
            continue
        if len(parts) < 2 or parts[0] in ("max", "-1"):
            return None
        try:
            quota, period = float(parts[0]), float(parts[1])
        except ValueError:
            return None
        return float(max(1, math.ceil(quota / period))) if quota > 0 and period > 0 else None
    return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one, capped by a
    cgroup CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, int(limit))
    return max(1, n)


def parse_threads(value: Any) -> int | str:
    """``"auto"`` / ``None`` → ``"auto"``; a positive integer (or its string) → int.

    Raises:
        ConfigError: anything else.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or (isinstance(value, float) and value != n):
        raise ConfigError.expected("threads 'auto' or an integer >= 1", repr(value))
    return n


@dataclass(frozen=True)
class ThreadChoice:
    """One decision: ``threads`` for this prediction and why.

    Attributes:
        threads: threads used (torch intra-op and BLAS).
        requested: ``"auto"`` or the integer asked for.
        usable_cores: cores in this process's affinity set (capped by a cgroup quota).
        torch_threads: ``torch.get_num_threads()`` before the prediction (the cap of ``auto``).
        workers: parallel workers sharing them.
        busy_cores: cores other processes kept busy (``None``: not measured).
        wait_policy: ``OMP_WAIT_POLICY`` as set in this process (``"unset"``: the
            OpenMP runtime's default, which spins for a while before sleeping).
    """

    threads: int
    requested: int | str
    usable_cores: int
    torch_threads: int
    workers: int
    busy_cores: float | None
    wait_policy: str

    @property
    def reason(self) -> str:
        if self.requested != "auto":
            return f"{self.threads} thread(s) as requested"
        busy = "load not measured" if self.busy_cores is None else f"{self.busy_cores:.1f} busy with other processes"
        return (f"auto: {self.usable_cores} usable core(s) / {self.workers} worker(s), torch set to "
                f"{self.torch_threads}, {busy} -> {self.threads} thread(s)")

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "requested": self.requested, "usable_cores": self.usable_cores,
                "torch_threads": self.torch_threads, "workers": self.workers,
                "busy_cores": None if self.busy_cores is None else round(self.busy_cores, 2),
                "wait_policy": self.wait_policy, "reason": self.reason}


def _cpu_ticks(cpus: set[int]) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cpus`` from ``/proc/stat``; None where unreadable."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    seen = 0
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        try:
            cpu = int(name[3:])
        except ValueError:
            continue
        if cpu not in cpus:
            continue
        vals = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        if len(vals) < 5:
            return None
        idle = vals[3] + vals[4]
        total += sum(vals)
        busy += sum(vals) - idle
        seen += 1
    return (busy, total) if seen else None


class _LoadMonitor:
    """Busy cores of other processes, from two ``/proc/stat`` samples (one per process:
    each decision measures from the previous one, so only the first waits 0.1 s)."""

    def __init__(self) -> None:
        self._last: tuple[float, float, float, float] | None = None  # (wall, own cpu, busy, total)

    @staticmethod
    def _sample(cpus: set[int]) -> tuple[float, float, float, float] | None:
        ticks = _cpu_ticks(cpus)
        if ticks is None:
            return None
        return (time.monotonic(), time.process_time(), ticks[0], ticks[1])

    def busy_cores(self) -> float | None:
        """Cores of the affinity set kept busy by *other* processes since the last call
        (a fresh 0.1 s measurement when there is none recent); ``None`` where unknown."""
        try:
            cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return None
        prev = self._last
        if prev is None or time.monotonic() - prev[0] > _MAX_SAMPLE_AGE_S:
            prev = self._sample(cpus)
            if prev is None:
                return None
            time.sleep(_FRESH_SAMPLE_S)
        cur = self._sample(cpus)
        if cur is None:
            return None
        self._last = cur
        d_total = cur[3] - prev[3]
        if d_total <= 0:
            return None
        busy_share = (cur[2] - prev[2]) / d_total  # fraction of the affinity set's time
        own = max(0.0, cur[1] - prev[1])  # this process's CPU seconds, all threads
        wall = max(1e-6, cur[0] - prev[0])
        busy = busy_share * len(cpus) - own / wall
        return max(0.0, min(float(len(cpus)), busy))


_MONITOR = _LoadMonitor()


class ThreadPolicy:
    """Decides the threads of each prediction (see the module docstring).

    Args:
        threads: ``"auto"`` (default) or an integer >= 1.
        workers: parallel workers of the batch sharing this machine's cores (``auto`` only).
    """

    def __init__(self, threads: Any = "auto", *, workers: int = 1) -> None:
        self.requested = parse_threads(threads)
        if int(workers) < 1:
            raise ConfigError.expected("workers >= 1", repr(workers))
        self.workers = int(workers)

    def __repr__(self) -> str:
        return f"ThreadPolicy({self.requested!r}, workers={self.workers})"

    def choose(self) -> ThreadChoice:
        """The threads for the next prediction."""
        import torch

        cores = usable_cores()
        current = int(torch.get_num_threads())
        wait = os.environ.get(WAIT_POLICY_ENV, "unset")
        if self.requested != "auto":
            return ThreadChoice(int(self.requested), self.requested, cores, current, self.workers, None, wait)
        share = max(1, min(current, cores // self.workers))
        busy = _MONITOR.busy_cores()
        n = share
        if busy is not None:
            free = cores - busy  # cores nobody else is using right now
            n = max(1, min(share, int(round(free / self.workers))))
        return ThreadChoice(n, "auto", cores, current, self.workers, busy, wait)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and ``n`` BLAS threads; restore after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - a dependency; BLAS keeps its own pool then
            limits: Any = contextlib.nullcontext()
        else:
            limits = threadpool_limits(limits=int(n), user_api="blas")
        with limits:
            yield
    finally:
        torch.set_num_threads(before)
