"""Crash and resume with real SIGKILLs: a trainer in a subprocess is killed at random moments, resumed each
time, and must lose at most one checkpoint interval per kill and end with the weights (and the log) of a run
that was never interrupted, bit for bit.

SIGKILL cannot be caught: no ``finally``, no atexit, no flush runs, as when a machine loses power or the OOM
killer strikes. Kills land anywhere: while Python and torch import, while the checkpoint is read back, in
the middle of a step, of a metrics.jsonl line or of a checkpoint write. The kill times come from a seeded
generator; where they land depends on the machine's speed, which is the point.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from rnnkit.checkpoint import has_checkpoint, load_checkpoint, read_weights_file

CHECKPOINT_EVERY = 10  # steps: the most a kill may cost
EPOCHS, BATCHES = 8, 100  # 800 steps in all

TRAINER = textwrap.dedent(f"""
    import sys

    import torch
    import torch.nn.functional as F
    from torch import nn

    from rnnkit.checkpoint import has_checkpoint
    from rnnkit.training import Trainer

    torch.set_num_threads(1)  # the same arithmetic in every process


    class Model(nn.Module):
        def __init__(self, vocab=50, embedding=32, hidden=64):
            super().__init__()
            self.embedding = nn.Embedding(vocab, embedding)
            self.dropout = nn.Dropout(0.2)  # the RNG state must survive the kills too
            self.gru = nn.GRU(embedding, hidden, batch_first=True)
            self.output = nn.Linear(hidden, vocab)

        def forward(self, tokens, state=None):
            out, state = self.gru(self.dropout(self.embedding(tokens)), state)  # (B, T, H)
            return self.output(self.dropout(out)), state  # (B, T, V)


    class Task:
        # Truncated BPTT over 8 streams, the GRU state carried from chunk to chunk (and through checkpoints).
        primary_metric, higher_is_better = "loss", False

        def __init__(self):
            data = torch.Generator().manual_seed(1234)
            self.tokens = torch.randint(0, 50, (8, 5 * {BATCHES} + 1), generator=data)
            self.valid = torch.randint(0, 50, (2, 40), generator=data)
            torch.manual_seed(0)
            self.model = Model()

        def train_batches(self, epoch, rng):
            tokens = self.tokens[rng.sample(range(8), 8)]  # each epoch its own order of the streams
            return [(tokens[:, s:s + 5], tokens[:, s + 1:s + 6]) for s in range(0, 5 * {BATCHES}, 5)]

        def loss(self, batch, carry):
            inputs, targets = batch
            logits, state = self.model(inputs, carry)
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten()), targets.numel(), state

        def evaluate(self, split):
            logits, _ = self.model(self.valid[:, :-1])
            return {{"loss": F.cross_entropy(logits.flatten(0, 1), self.valid[:, 1:].flatten()).item()}}


    def report(event):
        if event["event"] == "train":
            print("step", event["step"], flush=True)


    run_dir = sys.argv[1]
    trainer = Trainer(Task(), run_dir, epochs={EPOCHS}, seed=7, checkpoint_every={CHECKPOINT_EVERY}, log_every=1,
                      progress=False, optimizer="adam", lr=0.01, clip_grad_norm=1.0, on_event=report)
    # What a user does after a crash: resume if there is a checkpoint, else start again.
    result = trainer.resume() if has_checkpoint(run_dir, "last") else trainer.train(overwrite=True)
    print("done", result.step, flush=True)
""")

ROOT = Path(__file__).resolve().parent.parent


class Child:
    """The trainer subprocess, its stdout drained by a thread (a full pipe would stall it)."""

    def __init__(self, script: Path, run_dir: Path) -> None:
        self.process = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: list[str] = []
        self.training = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.strip())
            self.training.set()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.thread.join()

    def finish(self) -> str:
        stderr = self.process.stderr.read()
        self.process.wait()
        self.thread.join()
        assert self.process.returncode == 0, stderr[-3000:]
        return self.lines[-1]


def steps_logged(run_dir: Path) -> int:
    """The last step the killed process finished: its metrics.jsonl line is flushed at every step (a line cut
    by the kill does not count)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [0]
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "train":
            steps.append(event["step"])
    return max(steps)


def saved_step(run_dir: Path) -> int:
    """The step of the checkpoint a resume starts from (it must load: a kill never leaves a broken one)."""
    if not has_checkpoint(run_dir, "last"):
        return 0
    return load_checkpoint(run_dir, "last").trainer_state["loop"]["step"]


def staging_dirs(run_dir: Path) -> set[str]:
    """What a save in progress leaves if killed: .last.tmp-XXXX (being written) or .last.old (being swapped)."""
    checkpoints = run_dir / "checkpoints"
    return {p.name for p in checkpoints.iterdir() if p.name.startswith(".last.")} if checkpoints.is_dir() else set()


def without_timing(run_dir: Path) -> list[dict]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in e.items() if k not in ("wall_time", "time", "items_per_second")} for e in events]


def final_weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {"last": load_checkpoint(run_dir, "last").weights,
            "best": read_weights_file(run_dir / "model.safetensors")[0]}


def kill_and_resume(tmp_path: Path, kills: int, seed: int) -> dict[str, int]:
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    reference_dir = tmp_path / "reference"
    reference = Child(script, reference_dir)  # the uninterrupted run, alongside

    rng = random.Random(seed)
    run_dir = tmp_path / "killed"
    figures = {"kills": 0, "at_start": 0, "in_training": 0, "in_checkpoint_write": 0, "max_steps_lost": 0,
               "steps_redone": 0}
    previous = 0
    for _ in range(kills):
        leftovers = staging_dirs(run_dir)
        child = Child(script, run_dir)
        if rng.random() < 0.2:  # during start-up: imports, reading the checkpoint back, the first steps
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # during training: up to about four checkpoint intervals in
            assert child.training.wait(120), "the trainer never started training"
            time.sleep(rng.uniform(0.0, 0.25))
        assert child.process.poll() is None, "the run ended before it could be killed: make it longer"
        child.kill()
        figures["kills"] += 1
        reached, saved = steps_logged(run_dir), saved_step(run_dir)
        mid_write = bool(staging_dirs(run_dir) - leftovers)  # this process left a save unfinished
        phase = "at_start" if not child.lines else "in_checkpoint_write" if mid_write else "in_training"
        figures[phase] += 1
        lost = reached - saved
        assert 0 <= lost <= CHECKPOINT_EVERY, f"a kill at step {reached} lost {lost} steps (checkpoint at {saved})"
        assert saved >= previous, f"the checkpoint went back from step {previous} to {saved}"
        if (run_dir / "model.safetensors").exists():
            read_weights_file(run_dir / "model.safetensors")  # the best model always loads too
        figures["max_steps_lost"] = max(figures["max_steps_lost"], lost)
        figures["steps_redone"] += lost
        previous = saved
    assert Child(script, run_dir).finish() == f"done {EPOCHS * BATCHES}"
    assert reference.finish() == f"done {EPOCHS * BATCHES}"

    expected, got = final_weights(reference_dir), final_weights(run_dir)
    for name in ("last", "best"):
        assert expected[name].keys() == got[name].keys()
        for key in expected[name]:
            assert torch.equal(expected[name][key], got[name][key]), f"{name}/{key} differs after the kills"
    assert without_timing(run_dir) == without_timing(reference_dir)  # the log reads as if never stopped
    return figures


@pytest.mark.slow
def test_24_sigkills_at_random_moments_lose_at_most_one_interval_and_end_bit_identical(tmp_path, capsys):
    figures = kill_and_resume(tmp_path, kills=24, seed=2026)
    assert figures["kills"] == 24 and figures["in_training"] + figures["in_checkpoint_write"] >= 12
    with capsys.disabled():
        print(f"\n[crash-resume] {figures}")
