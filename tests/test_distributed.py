"""Data-parallel training: 2 processes (torchrun, gloo, 127.0.0.1) train the weights 1 process trains with the
same global batch, write from rank 0 only, and resume exactly."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import namedtuple

import pytest
import torch

from rnnkit.checkpoint import load_checkpoint
from rnnkit.distributed import DistributedTrainer, launch_command, shard_batch
from rnnkit.training import Trainer

TASK_SOURCE = textwrap.dedent("""
    import torch
    import torch.nn.functional as F

    import rnnkit


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = rnnkit.LSTM(3, 5, batch_first=True)
            self.head = torch.nn.Linear(5, 1)

        def forward(self, x, lengths):
            _, (h, _) = self.lstm(x, lengths=lengths)   # h: (1, B, 5), each sequence's state at its end
            return self.head(h[-1]).squeeze(-1)         # (B,)


    class Task:
        primary_metric, higher_is_better = "loss", False

        def __init__(self):
            generator = torch.Generator().manual_seed(0)
            self.x = torch.randn(32, 6, 3, generator=generator)
            self.y = torch.randn(32, generator=generator)
            self.lengths = torch.randint(1, 7, (32,), generator=generator)
            torch.manual_seed(0)
            self.model = Net()

        def train_batches(self, epoch, rng):
            order = list(range(32))
            rng.shuffle(order)
            return [order[i:i + 8] for i in range(0, 32, 8)]      # global batches of 8 rows

        def loss(self, batch, carry):
            prediction = self.model(self.x[batch], self.lengths[batch])
            return F.mse_loss(prediction, self.y[batch]), len(batch), None

        def evaluate(self, split):
            return {"loss": F.mse_loss(self.model(self.x, self.lengths), self.y).item()}
""")

WORKER_SOURCE = textwrap.dedent("""
    import sys

    sys.path.insert(0, sys.argv[1])
    from distributed_task import Task

    from rnnkit.distributed import DistributedTrainer, init_distributed

    init_distributed("gloo")
    mode, run_dir, max_steps = sys.argv[2], sys.argv[3], int(sys.argv[4])
    trainer = DistributedTrainer(Task(), run_dir, epochs=3, max_steps=max_steps, lr=0.02, log_every=1,
                                 progress=False)
    result = trainer.train() if mode == "train" else trainer.resume()
    assert result.stop_reason == "max_steps", result
""")

SETTINGS = {"epochs": 3, "lr": 0.02, "log_every": 1, "progress": False}


@pytest.fixture
def task_dir(tmp_path):
    (tmp_path / "distributed_task.py").write_text(TASK_SOURCE)
    (tmp_path / "worker.py").write_text(WORKER_SOURCE)
    return tmp_path


def _task(task_dir):
    spec = importlib.util.spec_from_file_location("distributed_task", task_dir / "distributed_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Task()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(task_dir, mode: str, run_dir, max_steps: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    for _attempt in range(2):  # a second try only if another process took the free port in between
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                   "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                   str(task_dir / "worker.py"), str(task_dir), mode, str(run_dir), str(max_steps)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        if done.returncode == 0 or "address already in use" not in done.stderr.lower():
            break
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _reference_weights(task_dir, run_dir, max_steps: int) -> dict[str, torch.Tensor]:
    task = _task(task_dir)
    initial = {name: value.clone() for name, value in task.model.state_dict().items()}
    Trainer(task, run_dir, max_steps=max_steps, **SETTINGS).train()
    weights = task.model.state_dict()
    assert any(not torch.allclose(weights[name], initial[name]) for name in weights)  # training moved them
    return weights


def test_two_processes_train_the_weights_of_one_and_resume(task_dir, tmp_path):
    run_dir = tmp_path / "run"
    _torchrun(task_dir, "train", run_dir, max_steps=3)
    _torchrun(task_dir, "resume", run_dir, max_steps=6)  # crosses an epoch end (4 batches an epoch)
    distributed = load_checkpoint(run_dir, "last").weights
    reference = _reference_weights(task_dir, tmp_path / "reference", max_steps=6)
    assert sorted(distributed) == sorted(reference)  # plain parameter names: no DDP "module." prefix
    for name, value in reference.items():
        torch.testing.assert_close(distributed[name], value, atol=1e-5, rtol=0)
    # Rank 0 alone wrote the log: one train event per step, each step once.
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2, 3, 4, 5, 6]
    reference_log = (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()
    reference_events = [json.loads(line) for line in reference_log]
    # The epoch-end evaluations (a stopped session also evaluates at its stop: at_stop, not in an unbroken run)
    evaluations = [e["metrics"]["loss"] for e in events if e["event"] == "eval" and not e.get("at_stop")]
    expected = [e["metrics"]["loss"] for e in reference_events if e["event"] == "eval" and not e.get("at_stop")]
    assert evaluations == pytest.approx(expected, abs=1e-5)
    assert len(evaluations) == 1
    assert not any(path.name.startswith("rnnkit-rank") for path in tmp_path.iterdir())


Batch = namedtuple("Batch", "tokens lengths")


def test_shard_batch_splits_rows_contiguously():
    tokens, lengths = torch.arange(14).view(7, 2), torch.arange(7)
    shards = [shard_batch(Batch(tokens, lengths), rank, 3) for rank in range(3)]
    assert all(isinstance(shard, Batch) for shard in shards)
    assert [len(shard.lengths) for shard in shards] == [2, 2, 3]
    assert torch.equal(torch.cat([shard.tokens for shard in shards]), tokens)
    assert shard_batch(list(range(5)), 1, 2) == [2, 3, 4]
    parts = [shard_batch({"x": tokens, "n": 3}, rank, 2) for rank in range(2)]
    assert torch.equal(torch.cat([part["x"] for part in parts]), tokens) and parts[1]["n"] == 3


def test_shard_batch_and_trainer_errors():
    with pytest.raises(ValueError, match="at least one row per process"):
        shard_batch([1], 0, 2)
    with pytest.raises(ValueError, match="cannot shard"):
        shard_batch("text", 0, 2)
    with pytest.raises(ValueError, match="init_distributed"):
        DistributedTrainer(object(), "unused")
    command = launch_command(2, ["train", "lm"])
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                           "rnnkit.cli", "train", "lm"]
    with pytest.raises(ValueError, match="nproc"):
        launch_command(0, [])
