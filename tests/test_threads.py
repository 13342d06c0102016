"""lumiere.threads: the thread count follows the CPUs the process may use (affinity, cgroup quota,
DataLoader workers), what the user set wins, and the OpenMP defaults are in the environment before
torch is imported (the CLI, the library, the tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lumiere import threads

ROOT = Path(__file__).resolve().parent.parent
VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", threads.SWITCH,
        threads._MARK)


@pytest.fixture
def env():
    """A clean slate for the thread variables; os.environ is restored afterwards (env_defaults writes it)."""
    saved = dict(os.environ)
    for name in VARS:
        os.environ.pop(name, None)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_own_cgroup_and_ancestors(tmp_path):
    proc = tmp_path / "cgroup"
    _write(proc, "0::/\n")
    _write(tmp_path / "fs" / "cpu.max", "150000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path / "fs", proc) == 1.5
    _write(tmp_path / "fs" / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path / "fs", proc) is None
    # The process's own cgroup has no limit, its parent does: the parent's applies.
    _write(proc, "0::/user.slice/job\n")
    _write(tmp_path / "fs" / "user.slice" / "job" / "cpu.max", "max 100000\n")
    _write(tmp_path / "fs" / "user.slice" / "cpu.max", "50000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path / "fs", proc) == 0.5


def test_cgroup_v1_quota(tmp_path):
    proc = tmp_path / "cgroup"
    _write(proc, "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    mount = tmp_path / "fs" / "cpu,cpuacct"
    _write(mount / "cpu.cfs_quota_us", "-1\n")
    _write(mount / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_quota(tmp_path / "fs", proc) is None
    _write(mount / "docker" / "abc" / "cpu.cfs_quota_us", "300000\n")
    _write(mount / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_quota(tmp_path / "fs", proc) == 3.0
    # Inside a container the mount's top is the container's own cgroup.
    _write(mount / "cpu.cfs_quota_us", "200000\n")
    assert threads.cgroup_cpu_quota(tmp_path / "fs", proc) == 2.0
    assert threads.cgroup_cpu_quota(tmp_path / "none", tmp_path / "missing") is None


def test_thread_count_follows_affinity_quota_and_workers(env, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert threads.available_cpus() == 8
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1.5)  # 1.5 CPUs of quota: 2 threads
    assert threads.available_cpus() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 0.2)
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 16.0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert threads.available_cpus() == 3
    assert [threads.thread_budget(workers) for workers in (0, 1, 2, 5)] == [3, 2, 1, 1]
    env[threads.SWITCH] = "5"
    assert threads.thread_budget() == 5 and threads.thread_budget(workers=2) == 3


def test_env_defaults_and_user_values(env, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 3)
    assert threads.env_defaults() == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    assert env[threads._MARK] == "OMP_NUM_THREADS,OMP_WAIT_POLICY"
    # Our own defaults (also when inherited by a child process) follow the machine; they are not "user set".
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.env_defaults() == {"OMP_NUM_THREADS": "2"}
    # The user's values win.
    for name in VARS:
        env.pop(name, None)
    env.update(OMP_NUM_THREADS="7", GOMP_SPINCOUNT="1000")
    assert threads.env_defaults() == {}
    assert env["OMP_NUM_THREADS"] == "7" and "OMP_WAIT_POLICY" not in env
    env.pop("GOMP_SPINCOUNT")
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert threads.env_defaults() == {} and env["OMP_WAIT_POLICY"] == "ACTIVE"
    env.pop("OMP_NUM_THREADS")
    env["MKL_NUM_THREADS"] = "1"  # torch reads it too
    assert threads.env_defaults() == {} and "OMP_NUM_THREADS" not in env
    # Switched off: nothing at all.
    for name in VARS:
        env.pop(name, None)
    env[threads.SWITCH] = "off"
    assert threads.env_defaults() == {} and "OMP_NUM_THREADS" not in env
    assert threads.configure() is None


# A subprocess: records the thread variables at the moment torch is first imported.
_PROBE = """
import importlib.abc, json, os, sys
seen = {}
class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.update({k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")})
        return None
sys.meta_path.insert(0, Probe())
"""


def _start(code: str, **extra) -> subprocess.Popen:
    """A fresh Python process running ``code`` with ``extra`` over the environment (less the thread
    variables): started now, read by ``_result``, so independent probes run side by side."""
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen):
    """The JSON the process printed last."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _run(code: str, **extra):
    return _result(_start(code, **extra))


def test_env_defaults_precede_torch_import():
    """The library, the CLI entry point and the tests' conftest all set the defaults before torch loads,
    so torch's OpenMP starts with them (1 thread here, from LUMIERE_THREADS=1, without configure())."""
    report = "import torch; print(json.dumps({'seen': seen, 'threads': torch.get_num_threads()}))"
    entries = ("import lumiere.pipeline",
               "import runpy; runpy.run_path('tests/conftest.py')",
               "import sys; sys.argv = ['lumiere', '--help']\ntry:\n    import lumiere.__main__\n"
               "except SystemExit:\n    pass")  # the report's own `import torch` comes after
    processes = {entry: _start(_PROBE + entry + "\n" + report, LUMIERE_THREADS="1") for entry in entries}
    for entry, process in processes.items():
        assert _result(process) == {"seen": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}, "threads": 1}, entry


def test_configure_in_a_fresh_process():
    code = ("import gc, json, lumiere, torch\nfrom lumiere.threads import configure, count_workers\n"
            "from torch.utils.data import DataLoader\n{body}\n"
            "print(json.dumps([torch.get_num_threads(), torch.get_num_interop_threads()]))")
    # Each case a fresh process, all started at once: (body, environment, expected [threads, inter-op]).
    cases = [
        # LUMIERE_THREADS CPUs (here more than the machine may have: torch takes what it is given); 1 inter-op
        # thread. DataLoader workers are counted in while the loader lives, and given back when it is gone.
        ("configure(); assert [torch.get_num_threads(), torch.get_num_interop_threads()] == [3, 1]\n"
         "loader = count_workers(DataLoader(range(4), num_workers=2))\n"
         "assert torch.get_num_threads() == 1\n"
         "del loader; gc.collect()", {"LUMIERE_THREADS": "3"}, [3, 1]),
        # The user's OMP_NUM_THREADS, torch.set_num_threads and set_num_interop_threads win.
        ("configure(); loader = count_workers(DataLoader(range(4), num_workers=1))",
         {"LUMIERE_THREADS": "3", "OMP_NUM_THREADS": "2"}, [2, 1]),
        ("configure(); torch.set_num_threads(2); loader = count_workers(DataLoader(range(4), num_workers=1))",
         {"LUMIERE_THREADS": "3"}, [2, 1]),
        ("torch.set_num_interop_threads(2); configure()", {"LUMIERE_THREADS": "1"}, [1, 2]),
        # Without configure() (a library user's own program) a loader changes nothing.
        ("torch.set_num_threads(1); loader = count_workers(DataLoader(range(4), num_workers=1))",
         {"LUMIERE_THREADS": "3"}, [1, None]),
    ]
    processes = [(_start(code.format(body=body), **env), expected) for body, env, expected in cases]
    # Switched off: the environment and torch's threads are left alone.
    off = _start("import json, os, lumiere, torch\nfrom lumiere.threads import configure\n"
                 "print(json.dumps([configure(), os.environ.get('OMP_WAIT_POLICY')]))", LUMIERE_THREADS="off")
    for process, expected in processes:
        got = _result(process)
        assert got[0] == expected[0] and expected[1] in (None, got[1]), (got, expected)
    off = _result(off)
    assert off == [None, None]
