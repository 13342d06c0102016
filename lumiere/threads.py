"""CPU threads that behave on a shared machine: the one place that decides how many threads torch and
OpenMP use, and how their idle threads wait.

* **How many**: the CPUs this process may use -- its affinity (``os.sched_getaffinity``) capped by its
  cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), less the
  DataLoader workers when training (each worker is a busy process of its own; torch gives it 1 thread).
* **How they wait**: ``OMP_WAIT_POLICY=PASSIVE``: a thread that finished its share of an op sleeps at
  once instead of spinning for the next one. Spinning is free on an idle machine but, when other jobs
  compete for the cores, a spinning thread burns the time slice its sibling needs to finish the op,
  and every op waits for its slowest thread (``benchmarks/bench_shared_cpu.py``; RESULTS.md).
* The inter-op pool (``torch.jit.fork``, unused here) gets 1 thread.

OpenMP reads its environment once, when torch (its OpenMP runtime) is first imported, so
:func:`env_defaults` runs when ``lumiere`` is imported (``lumiere/__init__.py``): import lumiere before
torch for it to apply. The entry points (CLI, app, the tests' conftest) call :func:`configure`, which
also sets torch's own thread counts; the training DataLoader passes through :func:`count_workers`.
What the user set always wins: ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``), ``OMP_WAIT_POLICY`` (or
``GOMP_SPINCOUNT`` / ``KMP_BLOCKTIME``) in the environment, or a ``torch.set_num_threads`` call.
``LUMIERE_THREADS=off`` leaves all of it alone; ``LUMIERE_THREADS=N`` uses N threads.
"""
from __future__ import annotations

import math
import os
import weakref
from pathlib import Path

SWITCH = "LUMIERE_THREADS"
# Which variables this module set (not the user): children inherit both, and still know they are defaults.
_MARK = "_LUMIERE_THREAD_DEFAULTS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# Any of these set by the user means "I chose how many threads" / "I chose how OpenMP waits".
COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

_applied: int | None = None  # the intra-op thread count this module last gave torch (None: not yet)
_workers = 0  # DataLoader worker processes alive (count_workers)


def affinity_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each of its parents up to ``base`` (a limit anywhere above applies too)."""
    parts = [p for p in rel.split("/") if p]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def cgroup_cpu_quota(root: Path | str = CGROUP_ROOT, proc_cgroup: Path | str = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup, in CPUs (``1.5`` = 150 ms per 100 ms), or None without one.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"); v1: ``cpu.cfs_quota_us`` (-1: none) over
    ``cpu.cfs_period_us`` under the ``cpu`` controller's mount. The process's own cgroup and its
    ancestors are read (the tightest wins), and the mount's top (a container sees its own cgroup there).
    """
    root = Path(root)
    paths = {"": "/"}  # controller ("" = v2) -> this process's cgroup path
    for line in (_read(Path(proc_cgroup)) or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3:
            for controller in fields[1].split(",") if fields[1] else [""]:
                paths[controller] = fields[2]
    quotas = []
    for directory in _ancestors(root, paths[""]):  # v2
        value = (_read(directory / "cpu.max") or "").split()
        if len(value) == 2 and value[0] != "max":
            quotas.append(int(value[0]) / int(value[1]))
    for mount in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):  # v1
        for directory in _ancestors(mount, paths.get("cpu", "/")):
            quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0 and int(period) > 0:
                quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by its cgroup quota (rounded up), at least 1."""
    cpus = affinity_cpus()
    try:
        quota = cgroup_cpu_quota()
    except (OSError, ValueError):  # an unreadable or odd cgroup file: no quota known
        quota = None
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def disabled() -> bool:
    return os.environ.get(SWITCH, "").strip().lower() in ("off", "false", "no", "none")


def _user_set(name: str) -> bool:
    return name in os.environ and name not in os.environ.get(_MARK, "").split(",")


def thread_budget(workers: int = 0) -> int:
    """torch's intra-op threads: ``LUMIERE_THREADS=N``, else the available CPUs less ``workers`` (>= 1)."""
    value = os.environ.get(SWITCH, "").strip()
    cpus = int(value) if value.isdigit() and int(value) > 0 else available_cpus()
    return max(1, cpus - max(0, workers))


def env_defaults() -> dict[str, str]:
    """Set OpenMP's thread count and wait policy in the environment unless the user did (or
    ``LUMIERE_THREADS=off``). Takes effect only if torch is not imported yet. Returns what it set."""
    if disabled():
        return {}
    wanted = {}
    if not any(_user_set(name) for name in COUNT_VARS):
        wanted["OMP_NUM_THREADS"] = str(thread_budget())
    if not any(_user_set(name) for name in WAIT_VARS):
        wanted["OMP_WAIT_POLICY"] = "PASSIVE"
    ours = [name for name in os.environ.get(_MARK, "").split(",") if name]
    set_now = {name: value for name, value in wanted.items()
               if not _user_set(name) and os.environ.get(name) != value}
    os.environ.update(set_now)
    ours += [name for name in set_now if name not in ours]
    if ours:
        os.environ[_MARK] = ",".join(ours)
    return set_now


def configure() -> int | None:
    """Call first thing in a program (the CLI, the app and the tests' conftest do): the environment
    defaults (:func:`env_defaults`), torch's intra-op threads = :func:`thread_budget` and 1 inter-op
    thread. The user's OMP_NUM_THREADS wins, and so does a ``torch.set_num_threads`` call made after
    this one (a later call leaves torch alone). Returns torch's intra-op thread count (None when off)."""
    if disabled():
        return None
    env_defaults()
    import torch  # after the environment: torch's OpenMP reads it on load

    _apply(torch)
    try:
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
    except RuntimeError:  # the pool started already, or the user set it: once per process
        pass
    return torch.get_num_threads()


def count_workers(loader):
    """Leave a CPU to each worker process of a DataLoader while it lives (torch gives each worker one
    thread of its own). Only after :func:`configure` in this process, and only while torch's thread
    count is still the one this module set. Returns ``loader``."""
    global _workers
    workers = getattr(loader, "num_workers", 0)
    if workers <= 0 or _applied is None or disabled():
        return loader
    import torch

    _workers += workers
    _apply(torch)
    weakref.finalize(loader, _release, workers)
    return loader


def _release(workers: int) -> None:
    global _workers
    _workers -= workers
    import torch

    _apply(torch)


def _apply(torch) -> None:
    global _applied
    if any(_user_set(name) for name in COUNT_VARS) or _applied not in (None, torch.get_num_threads()):
        return  # the user's choice
    _applied = thread_budget(_workers)
    if torch.get_num_threads() != _applied:
        torch.set_num_threads(_applied)
