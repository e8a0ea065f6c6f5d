"""The training loop shared by every task: one :class:`Trainer`, a small task protocol.

A task (language modelling, classification, tagging, translation, forecasting) tells the trainer only how
to make batches, how to compute a loss and how to evaluate; the trainer does the rest:

* optimisers by name (``adam``, ``adamw``, ``sgd`` with momentum); gradient accumulation over ``accumulate``
  batches per optimiser step;
* learning rate: linear warm-up, then decay by name (``none``, ``step``, ``plateau``, ``cosine``,
  ``inverse-sqrt``);
* gradient clipping by global norm (default 5.0, Pascanu et al. 2013), clip events counted and logged;
* truncated back-propagation through time: the recurrent state (``carry``) returned by one batch is
  detached and handed to the next (Williams & Peng 1990; Zaremba et al. 2014 carry it across chunks);
* validation after each epoch, every ``eval_every`` steps and when a time budget or ``max_steps`` stops the
  run between evaluations; the metric that selects the best weights (``select_metric``, default the task's
  own), early stopping after ``patience`` evaluations without improvement of it, the best weights in
  ``RUN_DIR/model.safetensors``, the ``keep_best`` best and the ``keep_last`` latest weights kept for
  checkpoint averaging (:func:`rnnkit.checkpoint.average_checkpoints`); a few validation examples with the
  model's outputs (``samples``) logged at each evaluation;
* checkpoints of everything needed to resume *exactly*: weights, optimiser and schedule state, the RNG
  states of torch / Python / NumPy, the TBPTT carry, counters, early-stopping state and the position in
  the epoch (each epoch's batch order is drawn from a seed derived from (seed, epoch), and a resumed run
  skips the batches already done);
* non-finite losses or gradients: skipped and counted, or a stop with remedies (``nan_policy``);
* a time budget that stops cleanly with a final checkpoint; ``max_steps``;
* ``metrics.jsonl`` (one JSON object an event), a tqdm progress bar on terminals, optional TensorBoard
  (only if ``torch.utils.tensorboard`` imports), and an ``on_event(dict)`` callback for live curves.

The task protocol (:class:`TrainTask`)::

    model: nn.Module                      # trained in place; its parameters go to the optimiser
    primary_metric: str = "loss"          # the key of evaluate()'s dict that selects the best model
    higher_is_better: bool = False        # accuracy, BLEU: True; loss, perplexity: False
    train_batches(epoch, rng) -> Iterable # this epoch's batches; draw all randomness from rng
                                          # (a random.Random seeded from (seed, epoch)), not global RNGs
    loss(batch, carry) -> (loss, n_items, carry)
                                          # loss: scalar mean over the batch's n_items (tokens, sequences);
                                          # carry: recurrent state for the next batch (TBPTT) or None.
                                          # The trainer passes carry=None at the start of every epoch.
    evaluate(split) -> dict[str, float]   # optional; called in eval mode under torch.no_grad()
    metrics: Collection[str]              # optional; the names evaluate() returns (select_metric is checked
                                          # against them before training starts)
    samples(n) -> list[dict[str, str]]    # optional; n examples of the last evaluate() (e.g. source,
                                          # reference, hypothesis), logged with each evaluation
    begin_step(step) -> None              # optional; called before each step's losses (e.g. teacher forcing)

Minimal example::

    class Regression:
        primary_metric, higher_is_better = "loss", False

        def __init__(self, x, y):
            self.model, self.x, self.y = torch.nn.Linear(3, 1), x, y

        def train_batches(self, epoch, rng):
            order = list(range(len(self.x)))
            rng.shuffle(order)
            return [order[i:i + 8] for i in range(0, len(order), 8)]

        def loss(self, batch, carry):
            pred = self.model(self.x[batch]).squeeze(-1)                  # (B,)
            return torch.nn.functional.mse_loss(pred, self.y[batch]), len(batch), None

        def evaluate(self, split):
            return {"loss": torch.nn.functional.mse_loss(self.model(self.x).squeeze(-1), self.y).item()}

    result = Trainer(Regression(x, y), "runs/reg", epochs=5, lr=1e-2, patience=2).train()
    result = Trainer(Regression(x, y), "runs/reg", epochs=8, lr=1e-2, patience=2).resume()  # 3 more epochs
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit import cancel
from rnnkit.checkpoint import (
    BEST_PREFIX,
    CONFIG_FILE,
    STEP_PREFIX,
    WEIGHTS_FILE,
    CheckpointError,
    checkpoint_dir,
    has_checkpoint,
    kept_checkpoints,
    load_checkpoint,
    read_config,
    save_checkpoint,
    write_config,
)
from rnnkit.state import detach_state  # re-exported: truncated BPTT's cut, for the tasks
from rnnkit.training_config import (  # re-exported: the settings, schedule and optimiser of a run
    DECAYS,
    LOWER_IS_BETTER,
    NAN_POLICIES,
    OPTIMIZERS,
    TRAJECTORY_SETTINGS,
    LearningRateSchedule,
    TrainingConfig,
    build_optimizer,
    higher_is_better,
    improves,
)

__all__ = [
    "TrainTask",
    "TrainingConfig",
    "TrainResult",
    "Trainer",
    "NonFiniteLossError",
    "LearningRateSchedule",
    "train",
    "detach_state",
    "epoch_seed",
    "seed_everything",
    "OPTIMIZERS",
    "DECAYS",
    "NAN_POLICIES",
    "METRICS_FILE",
    "LOWER_IS_BETTER",
    "log_event",
    "higher_is_better",
]

METRICS_FILE = "metrics.jsonl"
STOP_REASONS = ("completed", "early_stopping", "max_steps", "time_budget")


class NonFiniteLossError(ValueError):
    """Training met a NaN/Inf loss or gradient under ``nan_policy="stop"``; the message names the step."""


@runtime_checkable
class TrainTask(Protocol):
    """What the trainer needs from a task (see the module docstring for the full contract)."""

    model: nn.Module

    def train_batches(self, epoch: int, rng: random.Random) -> Iterable[Any]: ...

    def loss(self, batch: Any, carry: Any) -> tuple[Tensor, int, Any]: ...


# ----------------------------------------------------------------------------------------------------------
# Small helpers: seeding, RNG state, detaching the carry
# ----------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s batch order: a hash of (seed, epoch), so that every epoch's order is
    fixed by the run seed alone, and a resumed run rebuilds any epoch without replaying the earlier ones."""
    digest = hashlib.sha256(f"rnnkit-epoch:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].to("cpu"))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to("cpu") for s in state["cuda"]])


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _LoopState:
    """Everything besides weights, optimiser, schedule and RNG that a resumed run needs."""

    epoch: int = 0  # 0-based epoch being trained
    batch: int = 0  # batches of this epoch already done
    step: int = 0  # optimiser steps done, skipped ones included (each of ``accumulate`` batches)
    updates: int = 0  # optimiser updates (steps - skipped)
    clip_events: int = 0
    nonfinite_steps: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    bad_evaluations: int = 0
    evaluations: int = 0
    last_eval_step: int | None = None
    early_stopped: bool = False
    elapsed: float = 0.0  # training seconds of previous sessions
    metrics_offset: int = 0  # size of metrics.jsonl at the checkpoint
    window_loss: float = 0.0  # sum of loss x items since the last train event
    window_items: int = 0
    window_steps: int = 0
    carry: Any = None
    kept_best: list = field(default_factory=list)  # [metric, step] of each kept best checkpoint, best first


def _check_loop_state(loop: _LoopState) -> None:
    """Refuse counters of the wrong type (an edited or foreign trainer.json): the loop would otherwise fail
    later, deep inside, with a TypeError. ValueError names the field."""
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def is_number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    checks = {name: (is_int, "an integer >= 0") for name in (
        "epoch", "batch", "step", "updates", "clip_events", "nonfinite_steps", "bad_evaluations", "evaluations",
        "metrics_offset", "window_items", "window_steps")}
    checks.update({name: (lambda v: v is None or is_int(v), "an integer >= 0 or null")
                   for name in ("best_step", "best_epoch", "last_eval_step")})
    checks.update({name: (is_number, "a number") for name in ("elapsed", "window_loss")})
    checks["best_metric"] = (lambda v: v is None or is_number(v), "a number or null")
    checks["early_stopped"] = (lambda v: isinstance(v, bool), "true or false")
    checks["kept_best"] = (lambda v: isinstance(v, list) and all(
        isinstance(e, list) and len(e) == 2 and is_number(e[0]) and is_int(e[1]) for e in v),
        "a list of [metric, step] pairs")
    for name, (ok, expected) in checks.items():
        if not ok(getattr(loop, name)):
            raise ValueError(f"loop.{name} is {getattr(loop, name)!r}, expected {expected}")


@dataclass
class TrainResult:
    """How a training session ended. ``stop_reason`` is one of "completed", "early_stopping",
    "max_steps", "time_budget"; ``best_*`` refer to the validation metric (None without validation)."""

    stop_reason: str
    step: int
    epoch: int
    best_metric: float | None
    best_step: int | None
    last_metrics: dict[str, float] | None
    clip_events: int
    nonfinite_steps: int
    elapsed: float
    run_dir: Path


class Trainer:
    """Train ``task.model`` on ``task``; write checkpoints and logs to ``run_dir``.

    ``settings`` is a :class:`TrainingConfig` (or give its fields as keyword arguments). ``run_config`` is
    what ``config.json`` should hold besides the training settings (task, model config, data, vocabulary);
    without it an existing ``config.json`` is kept and only its ``"training"`` entry is updated.
    ``on_event(event: dict)`` receives every event (train / eval / nonfinite / checkpoint / stop) as it
    happens; an exception it raises stops training (no checkpoint is written for the unfinished part).

    Events written to ``metrics.jsonl`` (non-finite numbers written as null):

    * ``{"event": "train", "split": "train", "step", "epoch", "loss", "lr", "items", "items_per_second",
      "grad_norm", "clip_events", "nonfinite_steps", "wall_time", "time"}`` every ``log_every`` steps;
      ``loss`` is the item-weighted mean since the previous train event, ``clip_events`` and
      ``nonfinite_steps`` are running totals, ``wall_time`` is training seconds since the run began
      (all sessions), ``time`` the Unix time.
    * ``{"event": "eval", "split", "step", "epoch", "loss", "metrics": {...}, "primary_metric",
      "improved", "best_metric", "lr", "wall_time", "time"}`` after each evaluation (``loss`` is
      ``metrics["loss"]`` if the task reports it).
    * ``{"event": "nonfinite", "split": "train", "step", "epoch", "problem", "lr", ...}`` for a skipped step.
    * ``{"event": "stop", "reason", "step", "epoch", "best_metric", "best_step", "clip_events",
      "nonfinite_steps", "wall_time", "time"}`` when a session ends.

    ``checkpoint`` events (``{"event": "checkpoint", "name": "last" | "best", "step", "path"}``) go to the
    callback only. ``epoch`` is always the 0-based epoch during which the event happened.
    """

    def __init__(self, task: TrainTask, run_dir: str | Path, settings: TrainingConfig | None = None, *,
                 run_config: Mapping[str, Any] | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None, **overrides: Any) -> None:
        if settings is not None and overrides:
            raise ValueError("give either a TrainingConfig or keyword settings, not both")
        try:
            self.settings = settings if settings is not None else TrainingConfig(**overrides)
        except TypeError as err:
            known = ", ".join(f.name for f in fields(TrainingConfig))
            raise ValueError(f"{err}; known settings: {known}") from None
        _check_task(task)
        self.task = task
        self.model: nn.Module = task.model
        self.run_dir = Path(run_dir)
        self.run_config = dict(run_config) if run_config is not None else None
        self.on_event = on_event
        self.primary_metric: str = self.settings.select_metric or getattr(task, "primary_metric", "loss")
        self.higher_is_better: bool = higher_is_better(self.primary_metric, task)
        self.has_validation = callable(getattr(task, "evaluate", None))
        known = getattr(task, "metrics", None)
        if self.has_validation and known is not None and self.primary_metric not in known:
            raise ValueError(f"select_metric {self.primary_metric!r} is not among the metrics this task reports: "
                             f"{', '.join(known)}")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.settings, trainable)
        self.schedule = LearningRateSchedule(self.settings, self.higher_is_better)
        self.state = _LoopState()
        self.last_metrics: dict[str, float] | None = None
        self._metrics_file = None
        self._tensorboard = None
        self._session_start = 0.0
        self._window_seconds = 0.0
        self._last_grad_norm = float("nan")
        self._last_logged: tuple[float | None, float | None] = (None, None)  # loss, items/s
        self._last_saved_step: int | None = None
        self._show_progress = False

    # -- public entry points ---------------------------------------------------------------------------

    def train(self, *, overwrite: bool = False) -> TrainResult:
        """Train from scratch. Refuses a run directory that already holds a run unless ``overwrite``
        (which removes only the previous run's checkpoints, weights and metrics)."""
        previous = [p for p in (self.run_dir / "checkpoints", self.run_dir / WEIGHTS_FILE,
                                self.run_dir / METRICS_FILE) if p.exists()]
        if previous and not overwrite:
            found = ", ".join(p.name for p in previous)
            raise ValueError(f"{self.run_dir} already holds a training run ({found}); resume it "
                             f"(Trainer.resume), choose another directory, or pass overwrite=True")
        for path in previous:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        seed_everything(self.settings.seed)
        self.state = _LoopState()
        self.schedule = LearningRateSchedule(self.settings, self.higher_is_better)
        return self._run()

    def resume(self) -> TrainResult:
        """Continue the run in ``run_dir`` from ``checkpoints/last`` exactly where it stopped.

        The task and model must be built as for the original run (same config); settings may extend
        ``epochs``, ``max_steps`` or ``time_budget``. Raises :class:`CheckpointError` if there is no usable
        checkpoint.
        """
        checkpoint = load_checkpoint(self.run_dir, "last", model=self.model)
        path = checkpoint.path
        state = checkpoint.trainer_state
        if not isinstance(state, dict) or "loop" not in state:
            raise CheckpointError(f"{path}: holds weights only, no trainer state to resume from")
        before = {name: tensor.clone() for name, tensor in self.model.state_dict().items()}
        try:
            loop = _LoopState(**state["loop"])
            _check_loop_state(loop)
            saved_settings = dict(state["settings"])
            self.model.load_state_dict(checkpoint.weights, strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            _restore_rng(state["rng"])  # checked here; restored again just before the loop starts
            rng = state["rng"]
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
            self.model.load_state_dict(before)  # a refused checkpoint leaves the model as it was
            raise CheckpointError(f"{path}: trainer state does not fit this task/model "
                                  f"({type(err).__name__}: {str(err)[:200]})") from None
        self.state = loop
        changed = [name for name in TRAJECTORY_SETTINGS
                   if _jsonable(saved_settings.get(name)) != _jsonable(getattr(self.settings, name))]
        if changed:
            warnings.warn(f"resuming {self.run_dir} with different {', '.join(changed)} than the run was "
                          f"started with: training continues, but not as the original run would have",
                          stacklevel=2)
        self._truncate_metrics(self.state.metrics_offset)
        self._write_config()
        _restore_rng(rng)
        return self._run()

    def evaluate(self, split: str | None = None) -> dict[str, float]:
        """Run the task's evaluation on ``split`` (default ``eval_split``) in eval mode without gradients.

        The global RNG states are restored afterwards, so evaluating never changes the training
        trajectory (a run evaluated more often trains the same weights).
        """
        if not self.has_validation:
            return {}
        split = split or self.settings.eval_split
        was_training = self.model.training
        rng = _capture_rng()
        self.model.eval()
        try:
            with torch.no_grad():
                metrics = self.task.evaluate(split)
        finally:
            self.model.train(was_training)
            _restore_rng(rng)
        if metrics is None:
            return {}
        try:
            return {str(name): float(value) for name, value in dict(metrics).items()}
        except (TypeError, ValueError):
            raise ValueError(f"task.evaluate({split!r}) must return a dict of numbers, "
                             f"got {metrics!r}") from None

    # -- the loop --------------------------------------------------------------------------------------

    def _run(self) -> TrainResult:
        s, st = self.settings, self.state
        self._session_start = time.monotonic()
        self._show_progress = s.progress if s.progress is not None else sys.stderr.isatty()
        self._open_logs()
        try:
            reason = "early_stopping" if st.early_stopped else None
            if reason is None and s.max_steps is not None and st.step >= s.max_steps:
                reason = "max_steps"
            while reason is None and st.epoch < s.epochs:
                reason = self._run_epoch()
            reason = reason or "completed"
            self._finish(reason)
        finally:
            self._close_logs()
        return TrainResult(stop_reason=reason, step=st.step, epoch=st.epoch, best_metric=st.best_metric,
                           best_step=st.best_step, last_metrics=self.last_metrics, clip_events=st.clip_events,
                           nonfinite_steps=st.nonfinite_steps, elapsed=self._elapsed(), run_dir=self.run_dir)

    def _run_epoch(self) -> str | None:
        s, st = self.settings, self.state
        epoch = st.epoch
        batches = self.task.train_batches(epoch, random.Random(epoch_seed(s.seed, epoch)))
        size = len(batches) if hasattr(batches, "__len__") else None
        if self.schedule.total_steps is None and s.decay == "cosine" and s.cosine_seconds is None:
            self.schedule.total_steps = s.epochs * -(-size // s.accumulate) if size is not None else s.max_steps
        remaining = itertools.islice(iter(batches), st.batch, None)  # resume: skip the batches already done
        self.model.train()
        with self._progress_bar(epoch, size) as bar:
            # One step per ``accumulate`` batches (the epoch's last step may have fewer).
            while group := list(itertools.islice(remaining, s.accumulate)):
                cancel.check()  # run under a cancelled CancelToken (rnnkit.cancel), training stops between steps
                self._train_step(group)
                reason = self._after_step()
                bar.set_postfix(self._postfix(), refresh=False)
                bar.update(len(group))  # redraws at most every 0.1 s
                if reason is not None:
                    return reason
        # End of epoch: validate, move the position to the next epoch, checkpoint.
        early_stop = False
        if self.has_validation and st.last_eval_step != st.step:
            early_stop = self._evaluate_and_track()
        st.epoch, st.batch, st.carry = epoch + 1, 0, None  # the next epoch starts from a fresh state
        st.early_stopped = early_stop
        self._save_last()
        if early_stop:
            return "early_stopping"
        return self._out_of_time()

    def _train_step(self, batches: list[Any]) -> None:
        """One optimiser step on ``batches`` (``accumulate`` of them): the gradient of their item-weighted mean
        loss, sum_b n_b grad(L_b) / sum_b n_b, then clipping and the update."""
        st = self.state
        started = time.perf_counter()
        step = st.step + 1
        lr = self.schedule.lr(step, st.epoch, self._elapsed())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if hasattr(self.task, "begin_step"):
            self.task.begin_step(step)
        self.optimizer.zero_grad(set_to_none=True)
        carry, loss_sum, items, problem = st.carry, 0.0, 0, None
        for batch in batches:
            loss, n_items, carry = self.task.loss(batch, carry)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"task.loss must return (scalar loss tensor, n_items, carry), got a loss of "
                                 f"{type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}")
            n_items = int(n_items)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                problem = f"the loss is {loss_value}"
                break
            # One batch: its mean loss as it is. Several: each weighted by its items, divided by all below.
            (loss if len(batches) == 1 else loss * n_items).backward()
            carry = detach_state(carry)  # TBPTT: the next batch continues from this state, not through it
            loss_sum += loss_value * n_items
            items += n_items
        if problem is None:
            if len(batches) > 1 and items > 0:
                for group in self.optimizer.param_groups:
                    for parameter in group["params"]:
                        if parameter.grad is not None:
                            parameter.grad.div_(items)
            grad_norm = self._clip_gradients()
            if not math.isfinite(grad_norm):
                problem = f"the gradient norm is {grad_norm}"
        if problem is None:
            self.optimizer.step()
            st.updates += 1
            st.carry = carry
            st.window_loss += loss_sum
            st.window_items += items
        else:
            self.optimizer.zero_grad(set_to_none=True)  # the step is dropped; the previous carry is kept
            self._non_finite(step, problem, lr)
        st.window_steps += 1
        st.step, st.batch = step, st.batch + len(batches)
        self._window_seconds += time.perf_counter() - started

    def _clip_gradients(self) -> float:
        """Clip by global norm (Pascanu et al. 2013): g <- g * c / ||g|| if ||g|| > c. Returns ||g||."""
        limit = self.settings.clip_grad_norm
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]
                      if p.grad is not None]
        if not parameters:
            return 0.0
        # With no limit, max_norm=inf only measures: the scale factor is clamped to exactly 1.
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_norm=limit or float("inf")))
        if limit is not None and math.isfinite(norm) and norm > limit:
            self.state.clip_events += 1
        self._last_grad_norm = norm
        return norm

    def _non_finite(self, step: int, problem: str, lr: float) -> None:
        s, st = self.settings, self.state
        if s.nan_policy == "stop":
            last = (f"The last checkpoint is {checkpoint_dir(self.run_dir, 'last')} "
                    f"(step {self._last_saved_step})." if self._last_saved_step is not None
                    else "No checkpoint was written yet.")
            clipping = (f"lower gradient clipping (clip_grad_norm={s.clip_grad_norm:g})" if s.clip_grad_norm
                        else "enable gradient clipping (clip_grad_norm=5.0)")
            raise NonFiniteLossError(
                f"training stopped at step {step} (epoch {st.epoch}): {problem}. Remedies: lower the "
                f"learning rate (lr={s.lr:g}, now {lr:g}), add or lengthen warm-up, {clipping}, check the "
                f"data for extreme values; or set nan_policy='skip' to skip such steps. {last}")
        st.nonfinite_steps += 1
        self._emit({"event": "nonfinite", "split": "train", "step": step, "epoch": st.epoch,
                    "problem": problem, "lr": lr, "nonfinite_steps": st.nonfinite_steps}, log=True)

    def _after_step(self) -> str | None:
        s, st = self.settings, self.state
        if st.step % s.log_every == 0:
            self._log_train()
        if self.has_validation and s.eval_every is not None and st.step % s.eval_every == 0:
            if self._evaluate_and_track():
                st.early_stopped = True
                self._save_last()
                return "early_stopping"
        if s.checkpoint_every is not None and st.step % s.checkpoint_every == 0:
            self._save_last()
        if s.max_steps is not None and st.step >= s.max_steps:
            return "max_steps"
        return self._out_of_time()

    def _out_of_time(self) -> str | None:
        budget = self.settings.time_budget
        if budget is not None and time.monotonic() - self._session_start >= budget:
            return "time_budget"
        return None

    def _finish(self, reason: str) -> None:
        """Final evaluation (if asked), final checkpoint, and a loadable ``model.safetensors``."""
        s, st = self.settings, self.state
        if reason in ("max_steps", "time_budget"):
            if s.eval_on_stop and self.has_validation and st.last_eval_step != st.step:
                self._evaluate_and_track(at_stop=True)
            if self._last_saved_step != st.step or s.eval_on_stop:
                self._save_last()
        if st.best_step is None:
            # No validation (or none improved yet): the run directory still reloads, with the current weights.
            self._save_best({"selected": "last"})
        self._emit({"event": "stop", "reason": reason, "step": st.step, "epoch": st.epoch,
                    "best_metric": st.best_metric, "best_step": st.best_step, "clip_events": st.clip_events,
                    "nonfinite_steps": st.nonfinite_steps}, log=True)

    # -- evaluation and early stopping -----------------------------------------------------------------

    def _evaluate_and_track(self, at_stop: bool = False) -> bool:
        """Evaluate, keep the best weights, update plateau and early-stopping state. True: stop now.

        The evaluation made because the run stops (``at_stop``) takes part in choosing the best weights but
        not in the plateau schedule or the patience count, so that a resumed run trains exactly as an
        uninterrupted one would (its log says ``"at_stop": true``)."""
        s, st = self.settings, self.state
        metrics = self.evaluate()
        if not metrics:
            return False
        if self.primary_metric not in metrics:
            raise ValueError(f"task.evaluate({s.eval_split!r}) returned {sorted(metrics)}; the primary "
                             f"metric {self.primary_metric!r} is not among them")
        value = metrics[self.primary_metric]
        improved = improves(value, st.best_metric, self.higher_is_better, s.min_delta)
        st.evaluations += 1
        st.last_eval_step = st.step
        if improved:
            st.best_metric, st.best_step, st.best_epoch = value, st.step, st.epoch
            self._save_best({"selected": "best", self.primary_metric: repr(value)})
        if s.keep_best > 1:
            self._keep_best(value)
        if not at_stop:
            st.bad_evaluations = 0 if improved else st.bad_evaluations + 1
            self.schedule.observe(value)
        self.last_metrics = metrics
        samples = self._samples()
        self._emit({"event": "eval", "split": s.eval_split, "step": st.step, "epoch": st.epoch,
                    "loss": metrics.get("loss"), "metrics": metrics, "primary_metric": self.primary_metric,
                    "improved": improved, "best_metric": st.best_metric, "lr": self.optimizer.param_groups[0]["lr"]}
                   | ({"samples": samples} if samples else {}) | ({"at_stop": True} if at_stop else {}), log=True)
        if self._show_progress:
            self._print_evaluation(metrics, improved, samples)
        return bool(s.patience) and st.bad_evaluations >= s.patience

    def _samples(self) -> list[dict[str, str]]:
        """``log_samples`` examples of the last evaluation from the task's ``samples(n)``, as strings."""
        n, samples = self.settings.log_samples, getattr(self.task, "samples", None)
        if not n or not callable(samples):
            return []
        return [{str(key): str(value) for key, value in dict(sample).items()} for sample in samples(n)][:n]

    def _print_evaluation(self, metrics: Mapping[str, float], improved: bool,
                          samples: list[dict[str, str]]) -> None:
        """The evaluation and its samples above the progress bar (which stays at the bottom)."""
        from tqdm.auto import tqdm

        figures = ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())
        lines = [f"step {self.state.step} {self.settings.eval_split}: {figures}"
                 + (f"  (best {self.primary_metric})" if improved else "")]
        for sample in samples:
            lines += [f"    {key}: {value}" for key, value in sample.items()] + [""]
        tqdm.write("\n".join(lines).rstrip("\n"), file=sys.stderr)

    # -- checkpoints -----------------------------------------------------------------------------------

    def _keep_best(self, value: float) -> None:
        """Keep this evaluation's weights as ``checkpoints/best-STEP`` if it ranks among the ``keep_best``
        best so far (ties: the earlier stays ahead), and drop the one it pushes out."""
        s, st = self.settings, self.state
        kept = st.kept_best
        if not math.isfinite(value) or (len(kept) >= s.keep_best
                                        and not improves(value, kept[-1][0], self.higher_is_better, 0.0)):
            return
        save_checkpoint(self.run_dir, self.model, name=f"{BEST_PREFIX}{st.step}",
                        metadata={"step": str(st.step), "epoch": str(st.epoch), "metric": self.primary_metric,
                                  "value": repr(value), "higher_is_better": str(self.higher_is_better)})
        kept[:] = [entry for entry in kept if entry[1] != st.step] + [[value, st.step]]
        kept.sort(key=lambda entry: -entry[0] if self.higher_is_better else entry[0])  # stable
        for _, step in kept[s.keep_best:]:
            shutil.rmtree(checkpoint_dir(self.run_dir, f"{BEST_PREFIX}{step}"), ignore_errors=True)
        del kept[s.keep_best:]

    def _save_best(self, metadata: dict[str, str]) -> None:
        st = self.state
        path = save_checkpoint(self.run_dir, self.model, name="best",
                               metadata={**metadata, "step": str(st.step), "epoch": str(st.epoch)})
        self._emit({"event": "checkpoint", "name": "best", "step": st.step, "path": str(path)}, log=False)

    def _save_last(self) -> None:
        st = self.state
        if self._metrics_file is not None:
            self._metrics_file.flush()
            os.fsync(self._metrics_file.fileno())
            st.metrics_offset = self._metrics_file.tell()
        trainer_state = {
            "settings": self.settings.to_dict(),
            "loop": {f.name: getattr(st, f.name) for f in fields(_LoopState)} | {"elapsed": self._elapsed()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": _capture_rng(),
        }
        path = save_checkpoint(self.run_dir, self.model, name="last", trainer_state=trainer_state,
                               metadata={"step": str(st.step), "epoch": str(st.epoch)})
        self._last_saved_step = st.step
        if self.settings.keep_last:  # the weights of the latest checkpoints, kept for averaging
            save_checkpoint(self.run_dir, self.model, name=f"{STEP_PREFIX}{st.step}",
                            metadata={"step": str(st.step), "epoch": str(st.epoch)})
            for step, _ in kept_checkpoints(self.run_dir, STEP_PREFIX)[self.settings.keep_last:]:
                shutil.rmtree(checkpoint_dir(self.run_dir, f"{STEP_PREFIX}{step}"), ignore_errors=True)
        self._emit({"event": "checkpoint", "name": "last", "step": st.step, "path": str(path)}, log=False)

    def _write_config(self) -> None:
        if self.run_config is not None:
            config = dict(self.run_config)
        elif (self.run_dir / CONFIG_FILE).exists():
            config = {k: v for k, v in read_config(self.run_dir).items()
                      if k not in ("format", "format_version", "rnnkit_version")}
        else:
            config = {}
        config["training"] = self.settings.to_dict()
        write_config(self.run_dir, config)

    # -- logging -----------------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.state.elapsed + (time.monotonic() - self._session_start)

    def _log_train(self) -> None:
        st = self.state
        seconds = self._window_seconds
        loss = st.window_loss / st.window_items if st.window_items else None
        speed = st.window_items / seconds if seconds > 0 else None
        self._last_logged = (loss, speed)
        self._emit({"event": "train", "split": "train", "step": st.step, "epoch": st.epoch, "loss": loss,
                    "lr": self.optimizer.param_groups[0]["lr"], "items": st.window_items,
                    "items_per_second": speed,
                    "grad_norm": self._last_grad_norm, "clip_events": st.clip_events,
                    "nonfinite_steps": st.nonfinite_steps}, log=True)
        st.window_loss, st.window_items, st.window_steps = 0.0, 0, 0
        self._window_seconds = 0.0

    def _postfix(self) -> dict[str, str]:
        st = self.state
        postfix = {"lr": f"{self.optimizer.param_groups[0]['lr']:.2e}"}
        loss, speed = self._last_logged
        if st.window_items:  # the running window, else what the last train event reported
            loss = st.window_loss / st.window_items
            speed = st.window_items / self._window_seconds if self._window_seconds > 0 else speed
        if loss is not None:
            postfix["loss"] = f"{loss:.4f}"
        if speed is not None:
            postfix["items/s"] = f"{speed:.0f}"
        if st.clip_events:
            postfix["clipped"] = str(st.clip_events)
        return postfix

    def _emit(self, event: dict[str, Any], *, log: bool) -> None:
        event = {**event, "wall_time": self._elapsed(), "time": time.time()}
        if log and self._metrics_file is not None:
            self._metrics_file.write(json.dumps(_finite_or_null(event), allow_nan=False) + "\n")
            self._metrics_file.flush()  # readers (live curves, `tail -f`) see each event as it happens
        if log and self._tensorboard is not None:
            self._write_tensorboard(event)
        if self.on_event is not None:
            self.on_event(event)

    def _write_tensorboard(self, event: Mapping[str, Any]) -> None:
        writer, step = self._tensorboard, event.get("step", 0)
        if event["event"] == "train":
            for key in ("loss", "lr", "items_per_second", "grad_norm"):
                if isinstance(event.get(key), int | float) and math.isfinite(event[key]):
                    writer.add_scalar(f"train/{key}", event[key], step)
        elif event["event"] == "eval":
            for key, value in event["metrics"].items():
                if math.isfinite(value):
                    writer.add_scalar(f"{event['split']}/{key}", value, step)

    def _open_logs(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        if self.settings.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard=True but torch.utils.tensorboard does not import (pip install "
                              "tensorboard); continuing without it", stacklevel=3)
            else:
                self._tensorboard = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _close_logs(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _truncate_metrics(self, offset: int) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be written again)."""
        path = self.run_dir / METRICS_FILE
        if path.exists() and path.stat().st_size > offset:
            with open(path, "r+b") as f:
                f.truncate(offset)

    def _progress_bar(self, epoch: int, size: int | None):
        from tqdm.auto import tqdm

        return tqdm(total=size, initial=self.state.batch, desc=f"epoch {epoch + 1}/{self.settings.epochs}",
                    unit="batch", disable=not self._show_progress, leave=True, dynamic_ncols=True, file=sys.stderr)


def _check_task(task: Any) -> None:
    model = getattr(task, "model", None)
    if not isinstance(model, nn.Module):
        raise ValueError(f"the task must have a `model` attribute that is a torch.nn.Module, got "
                         f"{type(model).__name__}")
    for name in ("train_batches", "loss"):
        if not callable(getattr(task, name, None)):
            raise ValueError(f"the task must define {name}() (see rnnkit.training.TrainTask); "
                             f"{type(task).__name__} does not")
    metric = getattr(task, "primary_metric", "loss")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"task.primary_metric must be a metric name (str), got {metric!r}")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _finite_or_null(value: Any) -> Any:
    """Strict JSON for metrics.jsonl: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


def log_event(run_dir: str | Path, event: Mapping[str, Any]) -> None:
    """Append one event to ``RUN_DIR/metrics.jsonl`` (with its Unix ``time``), e.g. the test evaluation made
    after training; non-finite numbers are written as null."""
    line = json.dumps(_finite_or_null({**event, "time": time.time()}), allow_nan=False)
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def train(task: TrainTask, run_dir: str | Path, *, resume: bool = False,
          on_event: Callable[[dict[str, Any]], None] | None = None,
          run_config: Mapping[str, Any] | None = None, **settings: Any) -> TrainResult:
    """Train ``task`` in ``run_dir`` with keyword settings (see :class:`TrainingConfig`); with ``resume``,
    continue the run there if it has a checkpoint (else start it)."""
    trainer = Trainer(task, run_dir, run_config=run_config, on_event=on_event, **settings)
    if resume and has_checkpoint(run_dir, "last"):
        return trainer.resume()
    return trainer.train()
