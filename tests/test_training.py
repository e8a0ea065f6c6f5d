"""Tests for rnnkit.training: exact resume, early stopping, clipping, non-finite steps, logs, time budget.

The tasks here are tiny and defined in this file (torch.nn modules only), so the loop is tested on its own.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit.checkpoint import CheckpointError, load_checkpoint, load_weights, read_config
from rnnkit.training import (
    LearningRateSchedule,
    NonFiniteLossError,
    Trainer,
    TrainingConfig,
    detach_state,
    epoch_seed,
)

# ----------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------


class TinyLanguageModel(nn.Module):
    """Embedding -> dropout -> GRU -> dropout -> linear: dropout makes the RNG state matter."""

    def __init__(self, vocab_size: int = 11, embedding_size: int = 8, hidden_size: int = 12) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.dropout = nn.Dropout(0.3)
        self.gru = nn.GRU(embedding_size, hidden_size, batch_first=True)
        self.output = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, state=None):
        out, state = self.gru(self.dropout(self.embedding(tokens)), state)  # (B, T, H)
        return self.output(self.dropout(out)), state  # (B, T, V)


class TinyLanguageModelling:
    """Truncated BPTT over B parallel streams in chunks of T tokens. Each epoch shuffles which stream goes
    in which batch row and starts at a random offset (both from the epoch's rng), and the GRU state is
    carried from chunk to chunk."""

    primary_metric, higher_is_better = "loss", False

    def __init__(self, streams: int = 4, length: int = 41, chunk: int = 5, vocab_size: int = 11,
                 eval_uses_rng: bool = False) -> None:
        data = torch.Generator().manual_seed(1234)
        self.train_tokens = torch.randint(0, vocab_size, (streams, length), generator=data)  # (B, L)
        self.valid_tokens = torch.randint(0, vocab_size, (2, 16), generator=data)
        self.chunk = chunk
        self.model = TinyLanguageModel(vocab_size)
        self.eval_uses_rng = eval_uses_rng

    def train_batches(self, epoch, rng):
        offset = rng.randrange(self.chunk)
        rows = rng.sample(range(self.train_tokens.size(0)), self.train_tokens.size(0))
        tokens = self.train_tokens[rows, offset:]  # (B, L - offset)
        batches = []
        for start in range(0, tokens.size(1) - 1 - self.chunk + 1, self.chunk):
            batches.append((tokens[:, start:start + self.chunk], tokens[:, start + 1:start + 1 + self.chunk]))
        return batches

    def loss(self, batch, carry):
        inputs, targets = batch
        logits, state = self.model(inputs, carry)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten()), targets.numel(), state

    def evaluate(self, split):
        if self.eval_uses_rng:  # an evaluation that draws random numbers must not change training
            torch.rand(3)
            random.random()
            np.random.rand()
        logits, _ = self.model(self.valid_tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), self.valid_tokens[:, 1:].flatten()).item()
        return {"loss": loss, "perplexity": math.exp(loss)}


class Interrupt(Exception):
    """Stands for a crash: raised by a callback in the middle of training."""


def make_lm_task(seed: int = 0, **kwargs) -> TinyLanguageModelling:
    torch.manual_seed(seed)
    return TinyLanguageModelling(**kwargs)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs: max {(a[name] - b[name]).abs().max()}"


def read_events(run_dir) -> list[dict]:
    def refuse(constant):
        raise AssertionError(f"metrics.jsonl holds non-standard JSON constant {constant}")

    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line, parse_constant=refuse) for line in lines]


def without_timing(events: list[dict]) -> list[dict]:
    timing = ("wall_time", "time", "items_per_second")
    return [{k: v for k, v in e.items() if k not in timing} for e in events]


# ----------------------------------------------------------------------------------------------------------
# Exact resume
# ----------------------------------------------------------------------------------------------------------

RESUME_SETTINGS = {
    "adam-cosine": dict(optimizer="adam", lr=0.02, warmup_steps=3, decay="cosine", clip_grad_norm=0.5),
    "sgd-plateau": dict(optimizer="sgd", lr=0.5, momentum=0.9, warmup_steps=2, decay="plateau",
                        plateau_patience=1, decay_gamma=0.5, eval_every=5, patience=50),
    "adamw-step": dict(optimizer="adamw", lr=0.01, weight_decay=0.1, warmup_steps=4, decay="step",
                       decay_gamma=0.7),
}


def common(**overrides):
    settings = dict(epochs=3, seed=7, checkpoint_every=4, log_every=1, progress=False)
    settings.update(overrides)
    return settings


@pytest.mark.parametrize("name", list(RESUME_SETTINGS))
@pytest.mark.parametrize("interruption", ["max_steps", "crash", "crash_after_checkpoint"])
def test_resume_is_exact(tmp_path, name, interruption):
    settings = common(**RESUME_SETTINGS[name])
    reference_task = make_lm_task()
    epoch_sizes = [len(reference_task.train_batches(e, random.Random(epoch_seed(settings["seed"], e))))
                   for e in range(3)]
    boundaries = set(itertools.accumulate(epoch_sizes))
    reference = Trainer(reference_task, tmp_path / "reference", **settings).train()
    assert reference.stop_reason == "completed"
    expected = weights(reference_task.model)

    run_dir = tmp_path / "interrupted"
    if interruption == "crash_after_checkpoint":  # the first periodic checkpoint inside an epoch
        stop_at = next(k for k in itertools.count(4, 4) if k not in boundaries)
    else:
        stop_at = epoch_sizes[0] + 3  # in the middle of the second epoch, between checkpoints
    assert stop_at not in boundaries and stop_at < sum(epoch_sizes)
    task = make_lm_task()
    if interruption == "max_steps":  # without the evaluation at the stop, which an unbroken run does not make
        first = Trainer(task, run_dir, **settings, max_steps=stop_at, eval_on_stop=False).train()
        assert first.stop_reason == "max_steps" and first.step == stop_at
    else:
        def crash(event):
            if interruption == "crash" and event["event"] == "train" and event["step"] == stop_at:
                raise Interrupt
            if interruption == "crash_after_checkpoint" and event["event"] == "checkpoint" \
                    and event["name"] == "last" and event["step"] == stop_at:
                raise Interrupt

        with pytest.raises(Interrupt):
            Trainer(task, run_dir, **settings, on_event=crash).train()
    interrupted = weights(task.model)
    position = load_checkpoint(run_dir, "last").trainer_state["loop"]
    assert 0 < position["batch"] < epoch_sizes[position["epoch"]]  # resumes in the middle of an epoch
    assert any(not torch.equal(interrupted[k], expected[k]) for k in expected)

    # A new process would start from other RNG states and a freshly initialised model.
    seed_noise = 999
    torch.manual_seed(seed_noise)
    random.seed(seed_noise)
    np.random.seed(seed_noise)
    resumed_task = make_lm_task(seed=5)
    result = Trainer(resumed_task, run_dir, **settings).resume()
    assert result.stop_reason == "completed"
    assert result.step == reference.step
    assert_same_weights(weights(resumed_task.model), expected)
    assert result.clip_events == reference.clip_events
    assert result.best_metric == reference.best_metric
    # The log reads as if the run had never stopped.
    assert without_timing(read_events(run_dir)) == without_timing(read_events(tmp_path / "reference"))


@pytest.mark.parametrize("name", list(RESUME_SETTINGS))
def test_the_evaluation_at_a_stop_leaves_the_resumed_trajectory_unchanged(tmp_path, name):
    """The extra evaluation of a stopped run restores the RNG states and feeds neither the plateau schedule nor
    the patience count: the resumed run trains the same weights as an unbroken one."""
    settings = common(**{**RESUME_SETTINGS[name], "eval_every": 4})
    reference_task = make_lm_task()
    Trainer(reference_task, tmp_path / "reference", **settings).train()
    task = make_lm_task()
    Trainer(task, tmp_path / "run", **settings, max_steps=11).train()
    assert [e["step"] for e in read_events(tmp_path / "run") if e.get("at_stop")] == [11]
    resumed = make_lm_task(seed=5)
    Trainer(resumed, tmp_path / "run", **settings).resume()
    assert_same_weights(weights(resumed.model), weights(reference_task.model))


def test_resume_matters(tmp_path):
    """The resume test can fail: another seed (data order and dropout) gives other weights."""
    a, b = make_lm_task(), make_lm_task()
    Trainer(a, tmp_path / "a", **common(seed=1)).train()
    Trainer(b, tmp_path / "b", **common(seed=2)).train()
    assert any(not torch.equal(x, y) for x, y in zip(weights(a.model).values(), weights(b.model).values(),
                                                     strict=True))


def test_evaluation_does_not_change_training(tmp_path):
    """Evaluation runs between saved and restored RNG states: evaluating each step trains the same weights."""
    often, rarely = make_lm_task(eval_uses_rng=True), make_lm_task(eval_uses_rng=True)
    Trainer(often, tmp_path / "often", **common(eval_every=1)).train()
    Trainer(rarely, tmp_path / "rarely", **common()).train()
    assert_same_weights(weights(often.model), weights(rarely.model))


def test_resume_can_extend_epochs(tmp_path):
    task = make_lm_task()
    Trainer(task, tmp_path / "run", **common(epochs=1)).train()
    reference = make_lm_task()
    Trainer(reference, tmp_path / "reference", **common(epochs=2)).train()
    resumed = make_lm_task()
    result = Trainer(resumed, tmp_path / "run", **common(epochs=2)).resume()
    assert result.epoch == 2
    assert_same_weights(weights(resumed.model), weights(reference.model))


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(make_lm_task(), tmp_path / "empty", **common()).resume()


def test_fresh_training_refuses_an_existing_run(tmp_path):
    Trainer(make_lm_task(), tmp_path, **common(epochs=1)).train()
    with pytest.raises(ValueError, match="already holds a training run"):
        Trainer(make_lm_task(), tmp_path, **common(epochs=1)).train()
    result = Trainer(make_lm_task(), tmp_path, **common(epochs=1)).train(overwrite=True)
    assert result.stop_reason == "completed"
    assert sum(e["event"] == "stop" for e in read_events(tmp_path)) == 1  # the old log is gone


def test_carry_is_detached_between_chunks(tmp_path):
    """TBPTT: each loss sees the previous chunk's state, detached; the first chunk of an epoch sees None."""
    task = make_lm_task()
    seen = []
    original = task.loss

    def spy(batch, carry):
        seen.append(carry)
        return original(batch, carry)

    task.loss = spy
    Trainer(task, tmp_path, **common(epochs=2)).train()
    per_epoch = len(task.train_batches(0, random.Random(0)))
    assert seen[0] is None and seen[per_epoch] is None
    assert all(c is not None and not c.requires_grad and c.grad_fn is None for c in seen[1:per_epoch])


def test_detach_state_nested():
    x = torch.ones(2, requires_grad=True)
    state = {"h": x * 2, "pair": (x * 3, [x * 4]), "n": 5}
    detached = detach_state(state)
    assert not detached["h"].requires_grad and not detached["pair"][0].requires_grad
    assert not detached["pair"][1][0].requires_grad and detached["n"] == 5
    assert isinstance(detached["pair"], tuple) and isinstance(detached["pair"][1], list)
    assert torch.equal(detached["pair"][1][0], torch.full((2,), 4.0))


def test_epoch_seed_is_stable_and_distinct():
    assert epoch_seed(0, 1) == epoch_seed(0, 1)
    assert len({epoch_seed(s, e) for s in range(5) for e in range(5)}) == 25


# ----------------------------------------------------------------------------------------------------------
# Early stopping and the best checkpoint
# ----------------------------------------------------------------------------------------------------------


class ScriptedValidation:
    """Linear regression whose validation metric follows a script; keeps the weights at each evaluation."""

    def __init__(self, script, higher_is_better):
        torch.manual_seed(0)
        self.model = nn.Linear(2, 1)
        self.script = list(script)
        self.primary_metric, self.higher_is_better = "score", higher_is_better
        self.x = torch.randn(8, 2)
        self.y = self.x @ torch.tensor([1.5, -2.0]) + 0.3
        self.snapshots = []

    def train_batches(self, epoch, rng):
        order = list(range(8))
        rng.shuffle(order)
        return [order[:4], order[4:]]

    def loss(self, batch, carry):
        pred = self.model(self.x[batch]).squeeze(-1)  # (B,)
        return F.mse_loss(pred, self.y[batch]), len(batch), None

    def evaluate(self, split):
        assert split == "valid" and not self.model.training and not torch.is_grad_enabled()
        self.snapshots.append(weights(self.model))
        return {"score": self.script[len(self.snapshots) - 1], "loss": 0.0}


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_early_stopping_after_patience_and_best_weights(tmp_path, higher_is_better):
    script = [0.5, 0.6, 0.55, 0.58, 0.59, 0.7, 0.8]
    sign = 1 if higher_is_better else -1
    task = ScriptedValidation([sign * v for v in script], higher_is_better)
    result = Trainer(task, tmp_path, epochs=10, lr=0.05, patience=3, progress=False).train()
    assert result.stop_reason == "early_stopping"
    assert len(task.snapshots) == 5  # best at the 2nd evaluation, then 3 without improvement
    assert result.epoch == 5 and result.best_step == 4 and result.best_metric == sign * 0.6
    fresh = nn.Linear(2, 1)
    metadata = load_weights(tmp_path, fresh)
    assert_same_weights(weights(fresh), task.snapshots[1])
    assert not torch.equal(task.snapshots[1]["weight"], task.snapshots[4]["weight"])
    assert metadata["step"] == "4"
    # The last checkpoint holds the last weights; resuming an early-stopped run trains no further.
    assert_same_weights(load_checkpoint(tmp_path, "last").weights, weights(task.model))
    again = ScriptedValidation(task.script, higher_is_better)
    resumed = Trainer(again, tmp_path, epochs=10, lr=0.05, patience=3, progress=False).resume()
    assert resumed.stop_reason == "early_stopping" and resumed.step == result.step
    assert again.snapshots == []
    eval_events = [e for e in read_events(tmp_path) if e["event"] == "eval"]
    assert [e["improved"] for e in eval_events] == [True, True, False, False, False]


def test_min_delta_counts_small_gains_as_no_improvement(tmp_path):
    task = ScriptedValidation([1.0, 1.05, 1.08, 1.2, 1.21], higher_is_better=True)
    result = Trainer(task, tmp_path, epochs=10, lr=0.05, patience=2, min_delta=0.1, progress=False).train()
    assert result.stop_reason == "early_stopping" and len(task.snapshots) == 3 and result.best_metric == 1.0


def test_patience_zero_never_stops_early(tmp_path):
    """patience 0 is "no early stopping", as None: a run the configuration file sets to 0 uses all its epochs
    (before, 0 was refused as a patience below 1)."""
    task = ScriptedValidation([1.0, 0.5, 0.4, 0.3, 0.2], higher_is_better=True)
    result = Trainer(task, tmp_path, epochs=5, lr=0.05, patience=0, progress=False).train()
    assert result.stop_reason != "early_stopping" and len(task.snapshots) == 5 and result.best_metric == 1.0


def test_missing_primary_metric_is_a_clear_error(tmp_path):
    task = ScriptedValidation([1.0], higher_is_better=True)
    task.primary_metric = "accuracy"
    with pytest.raises(ValueError, match="primary metric 'accuracy'"):
        Trainer(task, tmp_path, epochs=1, progress=False).train()


def test_without_validation_the_final_weights_are_saved_as_best(tmp_path):
    task = LinearGradients([0.5, 1.0], [1.0, 2.0, 3.0])  # no evaluate()
    result = Trainer(task, tmp_path, epochs=2, lr=0.05, progress=False).train()
    assert result.best_metric is None and result.stop_reason == "completed"
    fresh = nn.Linear(3, 1, bias=False)
    assert load_weights(tmp_path, fresh)["selected"] == "last"
    assert_same_weights(weights(fresh), weights(task.model))


# ----------------------------------------------------------------------------------------------------------
# Gradient clipping
# ----------------------------------------------------------------------------------------------------------


class LinearGradients:
    """loss_b = c_b * (w . x): the gradient is c_b * x whatever w is, so every step is known by hand."""

    primary_metric, higher_is_better = "loss", False

    def __init__(self, scales, x):
        self.model = nn.Linear(3, 1, bias=False)
        nn.init.zeros_(self.model.weight)
        self.scales, self.x = scales, torch.tensor(x)

    def train_batches(self, epoch, rng):
        return list(self.scales)

    def loss(self, scale, carry):
        return scale * self.model(self.x).sum(), 1, None


@pytest.mark.parametrize("limit", [5.0, None])
def test_clipping_by_global_norm_and_its_count(tmp_path, limit):
    scales = [0.5, 2.0, 0.9, 3.0]
    x = [3.0, 4.0, 0.0]  # |x| = 5: gradient norms 2.5, 10, 4.5, 15
    task = LinearGradients(scales, x)
    result = Trainer(task, tmp_path, epochs=1, optimizer="sgd", momentum=0.0, lr=1.0, clip_grad_norm=limit,
                     log_every=1, progress=False).train()
    expected = torch.zeros(3, dtype=torch.float64)
    for scale in scales:
        gradient = scale * torch.tensor(x, dtype=torch.float64)
        norm = gradient.norm().item()
        if limit is not None and norm > limit:
            gradient = gradient * limit / (norm + 1e-6)  # torch's clip_grad_norm_ formula
        expected -= gradient  # SGD, lr = 1
    assert torch.allclose(task.model.weight.double().squeeze(0), expected, atol=1e-5)
    assert result.clip_events == (2 if limit is not None else 0)
    events = [e for e in read_events(tmp_path) if e["event"] == "train"]
    assert [e["grad_norm"] for e in events] == pytest.approx([2.5, 10.0, 4.5, 15.0])
    assert [e["clip_events"] for e in events] == ([0, 1, 1, 2] if limit is not None else [0, 0, 0, 0])


# ----------------------------------------------------------------------------------------------------------
# Non-finite losses and gradients
# ----------------------------------------------------------------------------------------------------------


class GoesNonFinite(LinearGradients):
    """Finite steps, except step ``bad_step`` whose loss is NaN or whose gradient is infinite."""

    def __init__(self, bad_step, kind):
        super().__init__([1.0] * 6, [0.1, 0.2, 0.3])
        self.bad_step, self.kind, self.step = bad_step, kind, 0

    def begin_step(self, step):
        self.step = step

    def loss(self, scale, carry):
        loss = scale * self.model(self.x).sum()
        if self.step == self.bad_step:
            if self.kind == "loss":
                loss = loss * float("nan")
            else:  # d sqrt(u)/du at u = 0 is infinite while the value stays finite (0)
                w = self.model.weight
                loss = loss + torch.sqrt(w - w.detach()).sum()
        return loss, 1, None


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_nonfinite_step_is_skipped_and_counted(tmp_path, kind):
    task = GoesNonFinite(bad_step=4, kind=kind)
    history = {}

    def remember(event):
        if event["event"] == "train":
            history[event["step"]] = weights(task.model)["weight"]

    result = Trainer(task, tmp_path, epochs=1, optimizer="adam", lr=0.1, nan_policy="skip", log_every=1,
                     progress=False, on_event=remember).train()
    assert result.nonfinite_steps == 1 and result.step == 6
    assert torch.equal(history[3], history[4])  # step 4 changed nothing
    assert not torch.equal(history[4], history[5]) and torch.isfinite(history[6]).all()
    checkpoint = load_checkpoint(tmp_path, "last")
    adam_steps = [int(s["step"]) for s in checkpoint.trainer_state["optimizer"]["state"].values()]
    assert adam_steps == [5]  # five updates for six steps
    skipped = [e for e in read_events(tmp_path) if e["event"] == "nonfinite"]
    assert [e["step"] for e in skipped] == [4] and kind in skipped[0]["problem"]


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_nonfinite_step_stops_with_remedies(tmp_path, kind):
    task = GoesNonFinite(bad_step=4, kind=kind)
    with pytest.raises(NonFiniteLossError, match="step 4") as caught:
        Trainer(task, tmp_path, epochs=1, lr=0.1, nan_policy="stop", checkpoint_every=2,
                progress=False).train()
    message = str(caught.value)
    assert "learning rate" in message and "clip" in message and "(step 2)" in message
    assert isinstance(caught.value, ValueError)


# ----------------------------------------------------------------------------------------------------------
# Logs, time budget, schedule, settings
# ----------------------------------------------------------------------------------------------------------

TRAIN_KEYS = {"event", "split", "step", "epoch", "loss", "lr", "items", "items_per_second", "grad_norm",
              "clip_events", "nonfinite_steps", "wall_time", "time"}
EVAL_KEYS = {"event", "split", "step", "epoch", "loss", "metrics", "primary_metric", "improved",
             "best_metric", "lr", "wall_time", "time"}
STOP_KEYS = {"event", "reason", "step", "epoch", "best_metric", "best_step", "clip_events",
             "nonfinite_steps", "wall_time", "time"}


def test_metrics_jsonl_lines_parse_and_hold_documented_keys(tmp_path):
    task = make_lm_task()
    callback_events = []
    result = Trainer(task, tmp_path, **common(epochs=2, log_every=2), on_event=callback_events.append).train()
    events = read_events(tmp_path)
    train = [e for e in events if e["event"] == "train"]
    evals = [e for e in events if e["event"] == "eval"]
    assert train and all(set(e) == TRAIN_KEYS for e in train)
    assert len(evals) == 2 and all(set(e) == EVAL_KEYS for e in evals)
    assert set(events[-1]) == STOP_KEYS and events[-1]["reason"] == "completed"
    assert [e["step"] for e in train] == list(range(2, result.step + 1, 2))
    batch_items = task.train_tokens.size(0) * task.chunk
    assert all(e["items"] == 2 * batch_items and e["items_per_second"] > 0 for e in train)
    assert evals[-1]["metrics"]["perplexity"] == pytest.approx(math.exp(evals[-1]["metrics"]["loss"]))
    assert evals[-1]["loss"] == evals[-1]["metrics"]["loss"]
    # The callback saw the same events, plus checkpoints.
    logged = [e for e in callback_events if e["event"] != "checkpoint"]
    assert logged == events
    assert {e["name"] for e in callback_events if e["event"] == "checkpoint"} == {"last", "best"}
    config = read_config(tmp_path)
    assert config["training"]["epochs"] == 2 and config["format"] == "rnnkit.run"


class Slow(LinearGradients):
    def loss(self, scale, carry):
        time.sleep(0.02)
        return super().loss(scale, carry)


def test_time_budget_stops_with_a_final_checkpoint(tmp_path):
    task = Slow([0.1] * 5, [1.0, 1.0, 1.0])
    started = time.monotonic()
    result = Trainer(task, tmp_path, epochs=1000, lr=0.01, time_budget=0.3, progress=False).train()
    assert result.stop_reason == "time_budget"
    assert 0.3 <= time.monotonic() - started < 5.0
    assert 5 <= result.step < 100
    checkpoint = load_checkpoint(tmp_path, "last")
    assert checkpoint.trainer_state["loop"]["step"] == result.step
    assert_same_weights(checkpoint.weights, weights(task.model))
    fresh = nn.Linear(3, 1, bias=False)
    load_weights(tmp_path, fresh)  # the run directory reloads
    assert_same_weights(weights(fresh), weights(task.model))
    assert read_events(tmp_path)[-1]["reason"] == "time_budget"


def test_eval_on_stop_updates_the_best_model(tmp_path):
    task = ScriptedValidation([0.1, 0.2, 0.3], higher_is_better=True)
    result = Trainer(task, tmp_path, epochs=5, max_steps=3, eval_on_stop=True, progress=False).train()
    assert result.stop_reason == "max_steps" and len(task.snapshots) == 2  # epoch 1 end, then the stop
    assert result.best_step == 3
    fresh = nn.Linear(2, 1)
    load_weights(tmp_path, fresh)
    assert_same_weights(weights(fresh), task.snapshots[1])


class LongScripted(ScriptedValidation):
    """One long epoch of slow steps: a stop by max_steps or time budget always falls inside it."""

    def train_batches(self, epoch, rng):
        return super().train_batches(epoch, rng) * 500

    def loss(self, batch, carry):
        time.sleep(0.02)
        return super().loss(batch, carry)


@pytest.mark.parametrize("stop, limit", [("max_steps", {"max_steps": 13, "eval_every": 10}),
                                         ("time_budget", {"time_budget": 0.3, "eval_every": 500})])
def test_every_run_evaluates_when_it_stops_and_that_evaluation_can_be_the_best(tmp_path, stop, limit):
    """Issue 18: a run stopped between evaluations evaluates once more (the time-budgeted one stops long before
    its first periodic evaluation), and that evaluation takes part in choosing the best weights."""
    task = LongScripted([0.1 * (i + 1) for i in range(100)], higher_is_better=True)
    result = Trainer(task, tmp_path, epochs=10, progress=False, **limit).train()
    assert result.stop_reason == stop and result.step % limit["eval_every"] != 0
    evals = [e for e in read_events(tmp_path) if e["event"] == "eval"]
    assert evals[-1]["step"] == result.step  # the last evaluation is of the final weights
    assert result.last_metrics == evals[-1]["metrics"]
    assert result.best_step == result.step  # the script improves at every evaluation: the final one is best
    fresh = nn.Linear(2, 1)
    load_weights(tmp_path, fresh)
    assert_same_weights(weights(fresh), task.snapshots[-1])


def test_learning_rate_schedule_formulas():
    def lr(decay, step, epoch=0, **kw):
        return LearningRateSchedule(TrainingConfig(lr=1.0, decay=decay, **kw), False).lr(step, epoch)

    assert [lr("none", s, warmup_steps=4) for s in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert lr("step", 1, epoch=5, decay_every=2, decay_gamma=0.5) == 0.25
    assert lr("step", 1, epoch=5, decay_every=2, decay_gamma=0.5, min_lr=0.3) == 0.3
    # Cosine over T = 10 steps after 2 warm-up steps: p = (s - 2) / 8.
    cosine = dict(warmup_steps=2, cosine_steps=10, min_lr=0.1)
    assert lr("cosine", 1, **cosine) == pytest.approx(0.5)
    assert lr("cosine", 6, **cosine) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr("cosine", 10, **cosine) == pytest.approx(0.1)
    assert lr("cosine", 50, **cosine) == pytest.approx(0.1)
    plateau = LearningRateSchedule(TrainingConfig(lr=1.0, decay="plateau", plateau_patience=2,
                                                  decay_gamma=0.5), higher_is_better=False)
    for value in (3.0, 2.0, 2.5, 2.1, 2.2, 1.0, 1.5):
        plateau.observe(value)
    assert plateau.lr(100, 0) == 0.5  # one reduction: after 2.5 and 2.1 failed to beat 2.0


def test_logged_learning_rate_follows_warmup_and_cosine(tmp_path):
    task = LinearGradients([0.1] * 8, [1.0, 0.0, 0.0])
    Trainer(task, tmp_path, epochs=1, optimizer="sgd", lr=0.8, warmup_steps=4, decay="cosine",
            log_every=1, progress=False).train()
    lrs = [e["lr"] for e in read_events(tmp_path) if e["event"] == "train"]
    expected = [0.8 * s / 4 for s in (1, 2, 3, 4)] + [0.8 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 4))
                                                      for s in (5, 6, 7, 8)]
    assert lrs == pytest.approx(expected)


def test_cosine_over_seconds_follows_the_clock_not_the_steps(tmp_path, monkeypatch):
    """With cosine_seconds the rate depends on the seconds trained, so a slower CPU (fewer steps in the same
    budget) still anneals to min_lr by the budget's end. Each step here takes 2 s of a fake clock."""
    clock = [1000.0]
    monkeypatch.setattr("rnnkit.training.time.monotonic", lambda: clock[0])

    class Slow(LinearGradients):
        def loss(self, scale, carry):
            clock[0] += 2.0
            return super().loss(scale, carry)

    Trainer(Slow([0.1] * 6, [1.0, 0.0, 0.0]), tmp_path, epochs=1, optimizer="sgd", lr=0.8, decay="cosine",
            cosine_seconds=8.0, min_lr=0.1, log_every=1, progress=False).train()
    lrs = [e["lr"] for e in read_events(tmp_path) if e["event"] == "train"]
    # step s starts 2 (s - 1) seconds in; from 8 s on the rate stays at min_lr
    expected = [0.1 + 0.7 * 0.5 * (1 + math.cos(math.pi * min(1.0, 2 * (s - 1) / 8))) for s in range(1, 7)]
    assert lrs == pytest.approx(expected)
    assert lrs[-2:] == pytest.approx([0.1, 0.1])
    # 0 turns it off (a config file's cosine_seconds overridden from the command line): the step horizon again
    assert TrainingConfig(decay="cosine", cosine_seconds=0, cosine_steps=10).cosine_seconds is None


@pytest.mark.parametrize("bad, match", [
    (dict(cosine_seconds=-1.0), "cosine_seconds must be a number of seconds >= 0"),
    (dict(cosine_seconds=float("inf")), "cosine_seconds must be a number of seconds >= 0"),
    (dict(cosine_seconds=60.0, cosine_steps=100), "cosine_steps or cosine_seconds, not both"),
    (dict(optimizer="adagrad"), "unknown optimizer 'adagrad'"),
    (dict(decay="linear"), "unknown decay"),
    (dict(nan_policy="ignore"), "unknown nan_policy"),
    (dict(lr=-1.0), "lr must be a positive number"),
    (dict(epochs=1.5), "epochs must be an integer"),
    (dict(clip_grad_norm=0.0), "clip_grad_norm must be positive"),
    (dict(learning_rate=0.1), "known settings"),
])
def test_bad_settings_are_value_errors(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        Trainer(make_lm_task(), tmp_path, **bad)


def test_task_without_loss_is_a_value_error(tmp_path):
    class NoLoss:
        model = nn.Linear(1, 1)

        def train_batches(self, epoch, rng):
            return []

    with pytest.raises(ValueError, match="loss"):
        Trainer(NoLoss(), tmp_path)


def test_cosine_without_a_horizon_is_a_value_error(tmp_path):
    task = LinearGradients([0.1] * 3, [1.0, 0.0, 0.0])
    task.train_batches = lambda epoch, rng: iter([0.1] * 3)  # no len()
    with pytest.raises(ValueError, match="cosine decay needs its horizon"):
        Trainer(task, tmp_path, epochs=1, decay="cosine", progress=False).train()
    result = Trainer(task, tmp_path / "with_max", epochs=1, decay="cosine", max_steps=3,
                     progress=False).train()
    assert result.step == 3


def test_progress_bar_shows_loss_and_throughput(tmp_path, capsys):
    task = make_lm_task()
    Trainer(task, tmp_path, **common(epochs=1, progress=True)).train()
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "items/s=" in err


def test_progress_bar_is_off_when_not_a_terminal(tmp_path, capsys):
    Trainer(make_lm_task(), tmp_path, **common(epochs=1, progress=None)).train()
    assert "epoch 1/1" not in capsys.readouterr().err  # pytest's captured stderr is not a TTY


def test_tensorboard_is_optional(tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard"):
            result = Trainer(make_lm_task(), tmp_path, **common(epochs=1, tensorboard=True)).train()
        assert not (tmp_path / "tensorboard").exists()
    else:
        result = Trainer(make_lm_task(), tmp_path, **common(epochs=1, tensorboard=True)).train()
        assert any((tmp_path / "tensorboard").iterdir())
    assert result.stop_reason == "completed"


def test_module_docstring_example_runs(tmp_path, monkeypatch):
    import rnnkit.training as training

    source = training.__doc__.split("Minimal example::")[1]
    code = "\n".join(line[4:] for line in source.splitlines())
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    namespace = {"torch": torch, "Trainer": Trainer, "x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5])}
    exec(compile(code, "training-docstring", "exec"), namespace)
    assert namespace["result"].epoch == 8 and (tmp_path / "runs" / "reg" / "model.safetensors").exists()


def test_a_nan_injected_into_a_real_task_stops_with_remedies_and_the_run_recovers(tmp_path):
    """An rnnkit language model (prepare() of the lm task) whose loss turns NaN at step 7: the run stops naming
    the step and the remedies, the checkpoint before it is intact, and resuming with nan_policy="skip" (the
    remedy the message names) skips that step, counts it, and ends with finite weights."""
    from rnnkit.tasks import resolve_settings, task_module, training_settings

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 30, encoding="utf-8")
    settings = resolve_settings("lm", {"data": str(text), "valid": str(text), "hidden_size": 8, "bptt": 8,
                                       "batch_size": 4, "max_steps": 12, "checkpoint_every": 5,
                                       "progress": False, "log_every": 1})
    run_dir = tmp_path / "run"

    def poisoned():
        task, run_config = task_module("lm").prepare(settings, run_dir)
        original, state = task.loss, {"step": 0}
        task.begin_step = lambda step: state.update(step=step)

        def loss(batch, carry):
            value, items, carry = original(batch, carry)
            return (value * float("nan") if state["step"] == 7 else value), items, carry

        task.loss = loss
        return task, run_config

    task, run_config = poisoned()
    with pytest.raises(NonFiniteLossError) as caught:
        Trainer(task, run_dir, training_settings(settings), run_config=run_config).train()
    message = str(caught.value)
    assert "step 7" in message and "the loss is nan" in message
    assert "lower the learning rate" in message and "clip" in message and "nan_policy='skip'" in message
    assert "(step 5)" in message and load_checkpoint(run_dir, "last").trainer_state["loop"]["step"] == 5

    task, run_config = poisoned()
    skipping = training_settings({**settings, "nan_policy": "skip"})
    with pytest.warns(UserWarning, match="different nan_policy"):
        result = Trainer(task, run_dir, skipping, run_config=run_config).resume()
    assert result.stop_reason == "max_steps" and result.step == 12 and result.nonfinite_steps == 1
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
    skipped = [e for e in read_events(run_dir) if e["event"] == "nonfinite"]
    assert [e["step"] for e in skipped] == [7]
    clipped = [e["clip_events"] for e in read_events(run_dir) if e["event"] == "train"]
    assert clipped == sorted(clipped)  # a running count in every train event


# ----------------------------------------------------------------------------------------------------------
# Issue 21: training a translator the way peers do
# ----------------------------------------------------------------------------------------------------------


class FixedBatches:
    """Least squares on 12 fixed examples (float64), in batches the test chooses: the loss of a batch is its
    mean over its examples."""

    primary_metric, higher_is_better = "loss", False

    def __init__(self, batches):
        generator = torch.Generator().manual_seed(3)
        self.x = torch.randn(12, 3, generator=generator, dtype=torch.float64)
        self.y = torch.randn(12, generator=generator, dtype=torch.float64)
        torch.manual_seed(0)
        self.model = nn.Linear(3, 1).double()
        self.batches = batches

    def train_batches(self, epoch, rng):
        return [list(batch) for batch in self.batches]

    def loss(self, batch, carry):
        return F.mse_loss(self.model(self.x[batch]).squeeze(-1), self.y[batch]), len(batch), None


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_accumulating_k_batches_steps_as_one_batch_k_times_larger(tmp_path, optimizer):
    """Gradient accumulation: batches of 3, 5 and 4 examples in one step give the step of one batch of all 12
    (each batch's mean loss weighted by its size), clipping included; the steps counted are optimiser steps."""
    settings = dict(epochs=2, optimizer=optimizer, lr=0.1, clip_grad_norm=0.5, momentum=0.0, progress=False)
    pieces = FixedBatches([range(0, 3), range(3, 8), range(8, 12)])
    whole = FixedBatches([range(0, 12)])
    accumulated = Trainer(pieces, tmp_path / "pieces", accumulate=3, **settings).train()
    single = Trainer(whole, tmp_path / "whole", **settings).train()
    assert accumulated.step == single.step == 2
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(pieces.model.state_dict()[name], value, rtol=0, atol=1e-12)
    # Without the weighting by batch size (a plain mean of the three batch means) the step would differ.
    plain = FixedBatches([range(0, 12)])
    with torch.no_grad():
        losses = [F.mse_loss(plain.model(plain.x[list(b)]).squeeze(-1), plain.y[list(b)]) for b in pieces.batches]
        full = F.mse_loss(plain.model(plain.x).squeeze(-1), plain.y)
    assert abs(float(sum(losses) / 3) - float(full)) > 1e-3


def test_accumulation_counts_steps_for_evaluation_and_a_short_last_step(tmp_path):
    task = FixedBatches([[i] for i in range(7)])  # 7 batches, 3 a step: steps of 3, 3 and 1 batches
    result = Trainer(task, tmp_path, epochs=2, accumulate=3, log_every=1, progress=False).train()
    events = read_events(tmp_path)
    assert result.step == 6
    assert [e["items"] for e in events if e["event"] == "train"] == [3, 3, 1] * 2


def test_inverse_sqrt_schedule_is_noam_normalised_to_its_peak():
    """decay="inverse-sqrt" against JoeyNMT's NoamScheduler (1-based step), factor chosen so that the peak,
    at the end of warm-up, is lr: rate = factor * d^-0.5 * min(step^-0.5, step * warmup^-1.5)."""
    lr, warmup = 2e-3, 8

    def noam(step, model_size=1):  # joeynmt/builders.py NoamScheduler._compute_rate, step counted from 1
        factor = lr * math.sqrt(warmup)
        return factor * model_size ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)

    schedule = LearningRateSchedule(TrainingConfig(lr=lr, warmup_steps=warmup, decay="inverse-sqrt"), False)
    assert [schedule.lr(s, 0) for s in range(1, 60)] == pytest.approx([noam(s) for s in range(1, 60)], rel=1e-12)
    assert schedule.lr(warmup, 0) == pytest.approx(lr)
    floor = LearningRateSchedule(TrainingConfig(lr=lr, warmup_steps=warmup, decay="inverse-sqrt", min_lr=1e-3), False)
    assert floor.lr(10_000, 0) == 1e-3


def test_plateau_decay_matches_torchs_reduce_lr_on_plateau():
    """decay="plateau" cuts the rate as torch.optim.lr_scheduler.ReduceLROnPlateau does (absolute threshold =
    min_delta; torch's patience counts the bad evaluations it tolerates, ours the ones that trigger a cut)."""
    values = [5.0, 4.0, 4.02, 3.99, 4.1, 3.5, 3.49, 3.6, 3.7, 3.45, 3.46, 3.47, 3.2, 3.3, 3.4, 3.5, 3.6]
    for patience in (1, 2, 3):
        settings = TrainingConfig(lr=1.0, decay="plateau", plateau_patience=patience, decay_gamma=0.5,
                                  min_delta=0.05, min_lr=0.1)
        ours = LearningRateSchedule(settings, higher_is_better=False)
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                               patience=patience - 1, threshold=0.05,
                                                               threshold_mode="abs", min_lr=0.1)
        for value in values:
            ours.observe(value)
            reference.step(value)
            assert ours.lr(1000, 0) == pytest.approx(optimizer.param_groups[0]["lr"])


class BleuPeaks(ScriptedValidation):
    """The loss keeps falling while BLEU peaks at the 3rd evaluation: the selection metric decides."""

    metrics = ("loss", "bleu", "chrf")

    def __init__(self):
        super().__init__([], higher_is_better=False)
        self.primary_metric = "loss"

    def evaluate(self, split):
        self.snapshots.append(weights(self.model))
        k = len(self.snapshots)
        bleu = [10.0, 20.0, 30.0, 25.0, 24.0, 23.0, 22.0, 21.0][k - 1]
        return {"loss": 1.0 / k, "bleu": bleu, "chrf": 2 * bleu}


def test_selection_and_early_stopping_by_bleu(tmp_path):
    by_loss = BleuPeaks()
    result = Trainer(by_loss, tmp_path / "loss", epochs=8, lr=0.05, patience=2, progress=False).train()
    assert result.stop_reason == "completed" and result.best_step == 16  # the loss improves to the end
    by_bleu = BleuPeaks()
    result = Trainer(by_bleu, tmp_path / "bleu", epochs=8, lr=0.05, patience=2, select_metric="bleu",
                     progress=False).train()
    assert result.stop_reason == "early_stopping" and len(by_bleu.snapshots) == 5
    assert result.best_step == 6 and result.best_metric == 30.0
    fresh = nn.Linear(2, 1)
    load_weights(tmp_path / "bleu", fresh)
    assert_same_weights(weights(fresh), by_bleu.snapshots[2])
    assert {e["primary_metric"] for e in read_events(tmp_path / "bleu") if e["event"] == "eval"} == {"bleu"}


def test_a_selection_metric_the_task_does_not_report_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="select_metric 'blue' is not among the metrics this task reports: loss, bleu"):
        Trainer(BleuPeaks(), tmp_path, select_metric="blue", progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_higher_is_better_by_metric_name():
    from rnnkit.training import higher_is_better

    assert [higher_is_better(m) for m in ("bleu", "chrf", "exact_match", "accuracy", "entity_f1")] == [True] * 5
    assert [higher_is_better(m) for m in ("loss", "perplexity", "wer", "per", "naive_rmse", "mase")] == [False] * 6
    assert not higher_is_better("wer_any") and not higher_is_better("per_any")


def test_keep_best_keeps_the_weights_of_the_n_best_evaluations(tmp_path):
    script = [0.5, 0.9, 0.7, 0.95, 0.6, 0.8, 0.85]
    task = ScriptedValidation(script, higher_is_better=True)
    Trainer(task, tmp_path, epochs=len(script), lr=0.05, keep_best=3, progress=False).train()
    from rnnkit.checkpoint import BEST_PREFIX, kept_checkpoints

    kept = kept_checkpoints(tmp_path, BEST_PREFIX)
    best_three = sorted(range(len(script)), key=lambda i: -script[i])[:3]  # evaluation i is at step 2 (i + 1)
    assert sorted(step for step, _ in kept) == sorted(2 * (i + 1) for i in best_three)
    for step, name in kept:
        assert_same_weights(load_checkpoint(tmp_path, name).weights, task.snapshots[step // 2 - 1])


def test_keep_last_keeps_the_weights_of_the_latest_checkpoints(tmp_path):
    from rnnkit.checkpoint import STEP_PREFIX, kept_checkpoints

    saved = {}
    task = make_lm_task()

    def remember(event):
        if event["event"] == "checkpoint" and event["name"] == "last":
            saved[event["step"]] = weights(task.model)

    result = Trainer(task, tmp_path, **common(keep_last=3), on_event=remember).train()
    kept = kept_checkpoints(tmp_path, STEP_PREFIX)
    assert [step for step, _ in kept] == sorted(saved, reverse=True)[:3] and kept[0][0] == result.step
    for step, name in kept:
        assert_same_weights(load_checkpoint(tmp_path, name).weights, saved[step])


class WithSamples(ScriptedValidation):
    def samples(self, n):
        return [{"source": f"source {i}", "reference": f"ref {i}", "hypothesis": f"hyp {len(self.snapshots)}"}
                for i in range(5)][:n]


def test_samples_are_logged_with_each_evaluation_and_shown_with_the_progress(tmp_path, capsys):
    task = WithSamples([0.1, 0.2], higher_is_better=True)
    Trainer(task, tmp_path, epochs=2, log_samples=2, progress=True).train()
    evals = [e for e in read_events(tmp_path) if e["event"] == "eval"]
    assert [e["samples"] for e in evals] == [
        [{"source": f"source {i}", "reference": f"ref {i}", "hypothesis": f"hyp {k}"} for i in range(2)]
        for k in (1, 2)]
    err = capsys.readouterr().err
    assert "step 2 valid: score 0.1" in err and "hypothesis: hyp 2" in err and "source: source 1" in err
    quiet = WithSamples([0.1], higher_is_better=True)
    Trainer(quiet, tmp_path / "quiet", epochs=1, log_samples=0, progress=False).train()
    assert "samples" not in [e for e in read_events(tmp_path / "quiet") if e["event"] == "eval"][0]
    assert "hypothesis" not in capsys.readouterr().err
