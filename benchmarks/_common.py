"""Shared helpers for the benchmark scripts: timing, FLOPs, peak memory, machine info, tables.

Memory on CPU: ``tracemalloc`` does not see torch's allocations, so the *activation* peak is taken
from torch's own CPU profiler (``profile_memory=True``): every allocation and free made by the
forward pass is replayed in time order and the high-water mark of the running sum is reported
(tensors alive before the call -- weights, inputs -- are not counted). This is the exact size of
the tensors torch asked for, not what the OS charged; ``rss_peak_delta`` (a 1 ms psutil sampler)
is reported next to it as a cross-check that includes allocator slack.
On CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the call.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import threading
import time
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, device: str) -> float:
    """Wall time of one call in seconds (device-synchronised)."""
    return time_call2(fn, device)[0]


def time_call2(fn, device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call.

    On a shared CPU the wall time includes the time other processes held the core; with one torch
    thread the process CPU time is the latency this process would see on an idle core (it still
    feels cache / memory-bandwidth interference), so it is the contention-robust number to compare.
    """
    sync(device)
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


# ----------------------------------------------------------------------------- memory
def _profiler_peak_bytes(prof) -> int:
    """High-water mark of live CPU bytes allocated inside a ``profile(profile_memory=True)`` block."""
    # device_type() is a c10 DeviceType enum; keep the CPU allocations only.
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).upper().endswith("CPU")]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


class _RssSampler:
    """Samples the process RSS every ``interval`` seconds in a thread; ``peak`` is the max seen."""

    def __init__(self, interval: float = 0.001):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def instrumented_run(fn, device: str, memory: bool = True) -> dict:
    """One call under FlopCounterMode (+ memory tracking): FLOPs, activation peak, wall time (s).

    Memory: see the module docstring. The wall time includes the instrumentation overhead; it is
    only used to choose the number of timed repeats (and doubles as a warm-up).
    """
    from torch.utils.flop_counter import FlopCounterMode

    gc.collect()
    counter = FlopCounterMode(display=False)
    out: dict = {}
    start = time.perf_counter()
    if not memory:
        with counter:
            fn()
    elif device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with counter:
            fn()
        torch.cuda.synchronize()
        out.update(peak_bytes=torch.cuda.max_memory_allocated() - before, memory_method="cuda.max_memory_allocated")
    else:
        from torch.profiler import ProfilerActivity, profile

        with _RssSampler() as rss, profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, counter:
            fn()
        out.update(peak_bytes=_profiler_peak_bytes(prof), rss_peak_delta_bytes=rss.peak - rss.base,
                   memory_method="torch.profiler(profile_memory) allocation high-water mark")
    out["instrumented_s"] = time.perf_counter() - start
    out["flops"] = int(counter.get_total_flops())
    return out


def training_peak_memory(fn, device: str) -> int:
    """Peak bytes of forward + backward of ``fn().square().mean()`` (grad mode; parameters as configured)."""
    gc.collect()
    loss = lambda: fn().float().square().mean().backward()  # noqa: E731
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss()
    return _profiler_peak_bytes(prof)


# ----------------------------------------------------------------------------- peak FLOP/s
def matmul_peak_flops(device: str, n: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    """Best-of-``repeats`` FLOP/s of an n x n x n matmul: the practical peak MFU is measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up
    timings = [time_call2(lambda: torch.matmul(a, b, out=out), device) for _ in range(repeats)]
    best = min(min(w, c) if device == "cpu" and torch.get_num_threads() == 1 else w for w, c in timings)
    return 2 * n ** 3 / best


# ----------------------------------------------------------------------------- info / output
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    import diffusers

    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    try:
        import psutil

        info["ram_gib"] = round(psutil.virtual_memory().total / 2 ** 30, 1)
    except ImportError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns`` = [(header, key)]; values are printed as given (format them beforehand)."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")) for _, k in columns) + " |")
    return "\n".join(lines)


def write_json(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=False))
    return path


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2 ** 20:.0f} MiB" if n < 2 ** 30 else f"{n / 2 ** 30:.2f} GiB"


def fmt_num(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".strip()


