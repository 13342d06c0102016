"""lumiere.train.processes: multi-process correctness under ``accelerate launch``, checked in one CPU process with
the rank faked: each rank draws its own noise, and only the main process writes files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from lumiere.train import loop, stages
from lumiere.train.loop import TrainSettings, process_seed
from lumiere.train.stages import Workspace, export_pipeline, run_stage
from tests.tiny import MICRO_CONFIG

ROOT = Path(__file__).resolve().parent.parent


class FakeProcess:
    """An accelerate process state of rank ``index`` (main when 0); counts the barriers it is asked for."""

    def __init__(self, index: int, processes: int = 2):
        self.process_index, self.num_processes = index, processes
        self.is_main_process = self.is_local_main_process = index == 0
        self.barriers = 0

    def wait_for_everyone(self) -> None:
        self.barriers += 1

    def print(self, *args, **kwargs) -> None:
        pass


def test_process_seeds_differ_per_rank_and_step():
    seeds = {process_seed(7, rank, step, 4) for rank in range(4) for step in range(50)}
    assert len(seeds) == 4 * 50  # distinct for every (step, rank): no two ranks ever share a draw
    assert process_seed(7, 0) != process_seed(7, 1)
    assert [process_seed(7, 0, step) for step in range(3)] == [7, 8, 9]  # one process: seed + step, as before


class _NoiseProbe(nn.Module):
    """A loss that draws from the global RNG, as the diffusion objective's timesteps and noise do."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.draws = []

    def forward(self, batch):
        noise = torch.randn(3)
        self.draws.append(noise)
        return (self.weight * noise).pow(2).mean() + 0 * batch.sum()


def _first_draws(monkeypatch, tmp_path, rank: int) -> torch.Tensor:
    class RankAccelerator(Accelerator):
        @property
        def process_index(self):
            return rank

    monkeypatch.setattr(loop, "Accelerator", RankAccelerator)
    module = _NoiseProbe()
    settings = TrainSettings(steps=2, batch_size=1, warmup_steps=1, ema_decay=None, checkpoint_every=100, seed=3)
    loop.train(module, [module.weight], DataLoader(torch.zeros(4, 1), batch_size=1, drop_last=True), settings,
               tmp_path / f"rank{rank}")
    return torch.stack(module.draws)


def test_ranks_draw_different_noise(monkeypatch, tmp_path):
    rank0, rank1 = _first_draws(monkeypatch, tmp_path, 0), _first_draws(monkeypatch, tmp_path, 1)
    assert not torch.allclose(rank0, rank1)
    assert torch.equal(rank0, _first_draws(monkeypatch, tmp_path, 0))  # still seeded: reproducible per rank


@pytest.fixture(scope="module")
def text_encoder():
    from lumiere.build import build_text_encoder

    return build_text_encoder(MICRO_CONFIG["model"]["text_encoder"], words=["a", "red", "circle"])


def test_only_the_main_process_writes_components(tmp_path, text_encoder):
    worker = FakeProcess(1)
    Workspace(MICRO_CONFIG, tmp_path / "worker", process=worker).write_component("text_encoder", text_encoder)
    assert not (tmp_path / "worker").exists()
    assert worker.barriers == 1  # it waits for the main process's files
    main = FakeProcess(0)
    Workspace(MICRO_CONFIG, tmp_path / "main", process=main).write_component("text_encoder", text_encoder)
    assert (tmp_path / "main" / "pipeline" / "text_encoder" / "config.json").is_file()
    assert (tmp_path / "main" / "pipeline" / "model_index.json").is_file()
    assert main.barriers == 1


def test_a_non_main_rank_writes_no_pipeline_files(monkeypatch, tmp_path):
    """A whole stage run on a worker rank: it trains, but leaves the stage's products to the main process."""
    monkeypatch.setattr(stages, "process_state", lambda: FakeProcess(1))
    config = dict(MICRO_CONFIG, output_dir=str(tmp_path / "out"))
    result = run_stage("t2i", config, steps=1, batch_size=1)
    assert result["step"] == 1
    assert not (tmp_path / "out" / "pipeline").exists()
    assert not (tmp_path / "out" / "t2i" / "final").exists()


def test_export_on_a_non_main_rank_writes_nothing(tmp_path):
    worker = FakeProcess(1)
    export_pipeline(tmp_path / "missing-run", tmp_path / "export", process=worker)  # would fail if it read it
    assert not (tmp_path / "export").exists() and worker.barriers == 1


@pytest.mark.parametrize("name", ["multi_gpu.yaml", "deepspeed_zero2.yaml"])
def test_example_accelerate_configs_ship_and_are_documented(name):
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "configs" / "accelerate" / name).read_text())
    assert config["distributed_type"] in {"MULTI_GPU", "DEEPSPEED"} and config["num_processes"] > 1
    assert f"configs/accelerate/{name}" in (ROOT / "docs" / "cli.md").read_text()


TWO_RANKS = '''
import json, sys, torch
from torch import nn
from torch.utils.data import DataLoader
from accelerate import PartialState
from lumiere.train import loop
from lumiere.train.stages import Workspace
from lumiere.build import build_text_encoder
from tests.tiny import MICRO_CONFIG

class Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight, self.draws = nn.Parameter(torch.ones(1)), []
    def forward(self, batch):
        noise = torch.randn(2)
        self.draws.append(noise)
        return (self.weight * noise).pow(2).mean() + 0 * batch.sum()

out = sys.argv[1]
probe = Probe()
settings = loop.TrainSettings(steps=2, batch_size=1, warmup_steps=1, ema_decay=None, checkpoint_every=100, seed=3)
loop.train(probe, [probe.weight], DataLoader(torch.zeros(8, 1), batch_size=1, drop_last=True), settings, out + "/train")
Workspace(MICRO_CONFIG, out + "/ws").write_component(
    "text_encoder", build_text_encoder(MICRO_CONFIG["model"]["text_encoder"], words=["a"]))
rank = PartialState().process_index
with open(f"{out}/draws{rank}.json", "w") as handle:
    json.dump(torch.stack(probe.draws).flatten().tolist(), handle)
'''


@pytest.mark.slow
def test_two_real_processes_draw_different_noise(tmp_path):
    """Two CPU processes (gloo) under torchrun: different draws, one pipeline written, no deadlock."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                    str(tmp_path)], check=True, env=env, cwd=ROOT, timeout=300, capture_output=True)
    draws = [json.loads((tmp_path / f"draws{rank}.json").read_text()) for rank in (0, 1)]
    assert draws[0] != draws[1]
    assert (tmp_path / "ws" / "pipeline" / "text_encoder" / "config.json").is_file()


LAUNCHED = '''
import json, sys
from lumiere.train.processes import process_state
state = process_state()  # first, as the CLI does
import torch
from torch import nn
from torch.utils.data import DataLoader
from lumiere.train import loop

out = sys.argv[1]
saver = loop.save_training_state
def save(*args, **kwargs):  # record every writer of a checkpoint
    with open(out + "/writers.txt", "a") as handle:
        handle.write(f"{state.process_index}\\n")
    return saver(*args, **kwargs)
loop.save_training_state = save

class Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight, self.seen, self.noise = nn.Parameter(torch.linspace(-1, 1, 4)), [], []
    def forward(self, batch):
        noise = torch.randn(4)
        self.seen += batch.flatten().tolist()
        self.noise.append(noise.tolist())
        return ((self.weight - batch.mean() - noise) ** 2).mean()

torch.manual_seed(0)
probe = Probe()
settings = loop.TrainSettings(steps=3, batch_size=2, lr=0.05, warmup_steps=1, ema_decay=0.9, checkpoint_every=1,
                              log_every=1, seed=3, log_with="none")
data = torch.arange(16, dtype=torch.float32)[:, None]
loop.train(probe, [probe.weight], DataLoader(data, batch_size=2, shuffle=True, drop_last=True), settings, out + "/run")
with open(f"{out}/rank{state.process_index}.json", "w") as handle:
    json.dump({"world": state.num_processes, "seen": probe.seen, "noise": probe.noise,
               "weight": probe.weight.tolist()}, handle)
'''


@pytest.mark.timeout(240)
def test_two_cpu_processes_form_one_group_under_torchrun_and_accelerate(tmp_path):
    """Launched as users launch: different data and noise per rank, identical weights, one writer, no hang.
    And `accelerate launch --cpu --num_processes 2` (one process without MPI) is refused, not run alone."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launchers = {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"],
        "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_port", "29532"],
    }
    runs = {}
    for name, command in launchers.items():
        (tmp_path / name).mkdir()
        runs[name] = subprocess.Popen([*command, str(script), str(tmp_path / name)], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    refused = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                              str(script), str(tmp_path)], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=200)
    assert refused.returncode != 0 and "starts one process" in refused.stdout + refused.stderr
    assert not (tmp_path / "rank0.json").exists()
    for name, run in runs.items():
        output, _ = run.communicate(timeout=200)
        assert run.returncode == 0, f"{name}:\n{output[-3000:]}"
        ranks = [json.loads((tmp_path / name / f"rank{rank}.json").read_text()) for rank in (0, 1)]
        assert [r["world"] for r in ranks] == [2, 2], name
        assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"]), name  # each rank its own share of the data
        assert ranks[0]["noise"] != ranks[1]["noise"], name
        assert ranks[0]["weight"] == ranks[1]["weight"], name  # one model, averaged gradients
        assert (tmp_path / name / "writers.txt").read_text().split() == ["0", "0", "0"], name  # 3 checkpoints, rank 0


def test_the_replica_fingerprint_tells_models_apart():
    from lumiere.train.processes import parameter_checksum

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    same = parameter_checksum(model)
    assert torch.equal(same, parameter_checksum(model))
    swapped = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    swapped[0].load_state_dict(model[1].state_dict())
    swapped[1].load_state_dict(model[0].state_dict())
    assert not torch.equal(same, parameter_checksum(swapped))  # same values, other places
    with torch.no_grad():
        model[1].bias[0] += 1e-3
    assert not torch.equal(same, parameter_checksum(model))
