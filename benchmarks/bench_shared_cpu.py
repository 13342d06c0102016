"""Slowdown under a competing CPU load: ``python -m lumiere generate`` and a slice of the tests, idle
and while a 2-thread CPU burner runs, for several thread settings, in one run:

    python benchmarks/bench_shared_cpu.py                      # before/after, generate + tests/test_pipeline.py
    python benchmarks/bench_shared_cpu.py --configs before after passive 1thread --workloads generate --repeats 3
    python benchmarks/bench_shared_cpu.py --load torch         # the burner is a 2-thread torch matmul loop

Each measurement is a fresh subprocess (wall time, and its CPU time from the children's rusage). The
configurations are environment overlays on a clean environment (OMP_*, GOMP_*, KMP_*, MKL_NUM_THREADS
and LUMIERE_THREADS removed first):

* ``before``: ``LUMIERE_THREADS=off`` -- the library leaves threads alone, as before lumiere.threads;
* ``after``: the library's defaults (lumiere.threads);
* ``passive`` / ``spin0`` / ``spin1k`` / ``spin10k`` / ``1thread``: ``before`` plus
  OMP_WAIT_POLICY=PASSIVE / GOMP_SPINCOUNT=0, 1000, 10000 / OMP_NUM_THREADS=1: each knob alone
  (libgomp's default spins 300000 rounds, "about 3 ms", before a waiting thread sleeps).

The load (``--load spin``, default) is two busy pure-Python processes: 2 CPUs of demand that never
yield; ``--load torch`` is one process multiplying 512x512 matrices with 2 torch threads at torch's
defaults (spinning OpenMP, like a colleague's job). Either runs in a session of its own, as another
user's job would (with the kernel's autogroup scheduling, CPU time is shared per session first). Idle
and loaded runs alternate, and the order of the configurations rotates per repeat, so drift in the
machine's other load spreads over all cells. Next to each run: the 1-minute load average at its
start and "others", the CPUs used during the run by processes that are neither the measured one nor
the burner (from /proc/stat): the noise a shared machine adds. Ratios: median loaded / median idle wall.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "shared_cpu.json"
PROMPT = "a red circle moving to the right over the sea"

CONFIGS = {
    "before": {"LUMIERE_THREADS": "off"},
    "after": {},
    "passive": {"LUMIERE_THREADS": "off", "OMP_WAIT_POLICY": "PASSIVE"},
    "spin0": {"LUMIERE_THREADS": "off", "GOMP_SPINCOUNT": "0"},
    "spin10k": {"LUMIERE_THREADS": "off", "GOMP_SPINCOUNT": "10000"},
    "spin1k": {"LUMIERE_THREADS": "off", "GOMP_SPINCOUNT": "1000"},
    "1thread": {"LUMIERE_THREADS": "off", "OMP_NUM_THREADS": "1"},
}
_STRIP_PREFIXES = ("OMP_", "GOMP_", "KMP_")
_STRIP = {"MKL_NUM_THREADS", "LUMIERE_THREADS"}

SPIN = "import os\nos.fork()\nwhile True:\n    pass\n"  # two busy processes
TORCH_LOAD = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\n"
              "while True:\n    a = torch.tanh(a @ a)\n")


def clean_env(overlay: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not (k.startswith(_STRIP_PREFIXES) or k in _STRIP)}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(overlay)
    return env


def busy_jiffies() -> int:
    """All CPUs' non-idle time so far (clock ticks), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of the processes in process group ``pgid`` (alive ones)."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Load:
    """The competing load, started and stopped around each loaded run: one session (like another user's
    job; with the kernel's autogroup scheduling CPU time is shared per session first) holding 2 busy
    threads of execution. Its environment is torch's defaults, never a configuration's."""

    def __init__(self, kind: str):
        self.kind, self.proc = kind, None

    def __enter__(self):
        code = SPIN if self.kind == "spin" else TORCH_LOAD
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=clean_env({}), start_new_session=True)
        time.sleep(2.0 if self.kind == "torch" else 0.3)  # torch's import, so the load is on at the start
        self.cpu0 = group_cpu_seconds(self.proc.pid)
        return self

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.proc.pid) - self.cpu0

    def __exit__(self, *exc):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def workload_cmd(name: str, out_dir: str, tests: list[str]) -> list[str]:
    if name == "generate":
        return [sys.executable, "-m", "lumiere", "generate", "--prompt", PROMPT, "--seed", "0",
                "--out", os.path.join(out_dir, "clip.mp4")]
    return [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]


def measure(cmd: list[str], env: dict, load: Load | None) -> dict:
    """Wall and CPU seconds of one run of ``cmd``, the load average at its start, others' CPUs."""
    loadavg = float(Path("/proc/loadavg").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, start = busy_jiffies(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    busy = (busy_jiffies() - busy0) / ticks
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    burner = load.cpu_seconds() if load is not None else 0.0
    return {"wall": wall, "cpu": cpu, "loadavg": loadavg, "others": max(0.0, busy - cpu - burner) / wall}


def _fmt(values: list[float], unit: str = " s") -> str:
    return f"{statistics.median(values):.1f}{unit} ({min(values):.1f}–{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["before", "after"], choices=list(CONFIGS))
    parser.add_argument("--workloads", nargs="+", default=["generate", "tests"], choices=["generate", "tests"])
    parser.add_argument("--tests", nargs="+", default=["tests/test_pipeline.py"], help="pytest arguments")
    parser.add_argument("--load", choices=["spin", "torch"], default="spin")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--states", nargs="+", choices=["idle", "loaded"], default=["idle", "loaded"])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as out_dir:
        for repeat in range(args.repeats):
            shift = repeat % len(args.configs)
            for workload in args.workloads:
                cmd = workload_cmd(workload, out_dir, args.tests)
                for config in args.configs[shift:] + args.configs[:shift]:
                    env = clean_env(CONFIGS[config])
                    states = [state == "loaded" for state in args.states]
                    for loaded in states if repeat % 2 == 0 else states[::-1]:
                        if loaded:
                            with Load(args.load) as load:
                                result = measure(cmd, env, load)
                        else:
                            result = measure(cmd, env, None)
                        result.update(workload=workload, config=config, loaded=loaded, repeat=repeat)
                        runs.append(result)
                        print(f"[{repeat}] {workload:8s} {config:8s} {'loaded' if loaded else 'idle  '} "
                              f"wall {result['wall']:6.1f} s  cpu {result['cpu']:6.1f} s  "
                              f"loadavg {result['loadavg']:.2f}  others {result['others']:.2f} CPUs", flush=True)

    print(f"\nnproc {os.cpu_count()}, affinity {len(os.sched_getaffinity(0))} CPUs, load: {args.load} "
          f"(2 threads), {args.repeats} repeat(s), median (min–max)\n")
    header = ("| workload | config | idle wall | loaded wall | loaded / idle | idle CPU | loaded CPU "
              "| loadavg idle / loaded | others (CPUs) idle / loaded |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    for workload in args.workloads:
        for config in args.configs:
            cell = {state: [r for r in runs if r["workload"] == workload and r["config"] == config
                            and r["loaded"] == state] for state in (False, True)}
            walls = {state: [r["wall"] for r in cell[state]] for state in cell}
            ratio = (statistics.median(walls[True]) / statistics.median(walls[False])
                     if walls[True] and walls[False] else None)
            rows.append({"workload": workload, "config": config, "ratio": ratio})
            line = [workload, config]
            for key, fmt in (("wall", _fmt), ("cpu", _fmt)):
                line += [fmt([r[key] for r in cell[state]]) if cell[state] else "-" for state in (False, True)]
            line.insert(4, f"**{ratio:.2f}×**" if ratio else "-")
            for key in ("loadavg", "others"):
                line.append(" / ".join(f"{statistics.median(r[key] for r in cell[state]):.2f}" if cell[state]
                                       else "-" for state in (False, True)))
            print("| " + " | ".join(line) + " |")
    payload = {"machine": {"cpu": _cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version()},
               "args": vars(args), "runs": runs, "ratios": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.out}")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
