"""What a training run is told: its settings (:class:`TrainingConfig`), the learning-rate schedule they define,
the optimiser they name, and which way each metric improves. :mod:`rnnkit.training` runs the loop with them (and
re-exports every name here)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from rnnkit.checks import check_choice, check_int

__all__ = ["TrainingConfig", "LearningRateSchedule", "OPTIMIZERS", "DECAYS", "NAN_POLICIES", "LOWER_IS_BETTER",
           "TRAJECTORY_SETTINGS", "higher_is_better", "improves", "build_optimizer"]

OPTIMIZERS = ("adam", "adamw", "sgd")
DECAYS = ("none", "step", "plateau", "cosine", "inverse-sqrt")
# Metrics for which lower is better, by the last part of their name (``loss``, ``naive_rmse``, ``wer``); any
# other metric (accuracy, F1, BLEU, chrF, exact match) is better higher.
LOWER_IS_BETTER = frozenset({"loss", "perplexity", "bits_per_char", "mae", "rmse", "mase", "wer", "per",
                             "wer_any", "per_any"})
NAN_POLICIES = ("skip", "stop")

# ----------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TrainingConfig:
    """Training settings (saved in ``config.json`` under ``"training"``).

    Stopping: ``epochs``; ``max_steps`` (optimiser steps, counting skipped ones); ``time_budget`` (seconds of
    this session); ``patience`` (evaluations without an improvement of more than ``min_delta``; None or 0: never).

    Optimiser: ``optimizer`` in OPTIMIZERS, ``lr``, ``weight_decay``, ``momentum`` (sgd), ``betas`` (adam/w).

    Learning rate at step s (1-based): lr_s = w(s) * d(s), where w(s) = min(1, s / warmup_steps) is the
    linear warm-up and d(s) the decay named by ``decay``:
      none:    lr
      step:    max(min_lr, lr * decay_gamma ** k), k = 0 before epoch ``decay_start`` (0-based; None:
               ``decay_every``), then 1 + (epoch - decay_start) // decay_every: the rate is multiplied by
               gamma at epoch decay_start and every decay_every epochs after (Zaremba et al. 2014: lr 1,
               halved from the fifth epoch on: decay_gamma 0.5, decay_start 4, decay_every 1)
      plateau: max(min_lr, lr * decay_gamma ** k), k = times ``plateau_patience`` evaluations in a row
               did not improve the primary metric
      cosine:  min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2, p = (s - warmup) / (T - warmup) in [0, 1],
               T = ``cosine_steps``, else epochs x steps per epoch, else ``max_steps`` (Loshchilov &
               Hutter 2017, without restarts); with ``cosine_seconds`` set, p = t / cosine_seconds instead,
               t the seconds the run has trained (every session, evaluations included, as ``time_budget``
               counts them): a run bounded by time anneals fully by its end on any CPU, but its rates follow
               the clock, so a rerun or a resumed run is not the same step for step (0: off, as None)
      inverse-sqrt: max(min_lr, lr * sqrt(W / max(s, W))), W = max(1, warmup_steps): after the warm-up the
               rate falls as 1 / sqrt(s) (Vaswani et al. 2017; fairseq's inverse_sqrt, JoeyNMT's noam shape)

    Gradients: ``accumulate`` batches make one optimiser step, with the gradient of their item-weighted mean
    loss, sum_b n_b grad(L_b) / sum_b n_b: the step of one batch ``accumulate`` times larger (fairseq's
    --update-freq); ``max_steps``, ``eval_every``, ``checkpoint_every`` and the schedules count these steps.
    ``clip_grad_norm`` rescales g to g * c / ||g|| when the global norm ||g|| > c (None: off).
    ``nan_policy``: "skip" a step whose loss or gradient norm is not finite (and count it), or "stop".

    Selection: ``select_metric`` (None: the task's ``primary_metric``) picks the best weights and drives
    ``patience`` and plateau decay; lower is better for the names in LOWER_IS_BETTER, higher for the others.
    ``keep_best`` (>= 1) keeps the weights of the N best evaluations as ``checkpoints/best-STEP``, and
    ``keep_last`` (>= 0) those of the N latest checkpoints as ``checkpoints/step-STEP``, for averaging.

    Bookkeeping: ``eval_split``; ``eval_every`` and ``checkpoint_every`` (steps; None, or 0 where None cannot be
    written as in a TOML file: at epoch ends only);
    ``eval_on_stop`` (default True: a run stopped by max_steps or time_budget between evaluations evaluates
    once more, so its last figures are of its final weights and the best model includes the last steps);
    ``log_samples`` (examples logged with each evaluation, if the task gives samples; 0: none);
    ``log_every`` (steps per train event); ``seed``; ``progress`` (None: only on a terminal);
    ``tensorboard`` (write ``RUN_DIR/tensorboard`` if torch.utils.tensorboard imports).
    """

    epochs: int = 10
    max_steps: int | None = None
    time_budget: float | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    decay: str = "none"
    decay_gamma: float = 0.5
    decay_every: int = 1
    decay_start: int | None = None
    plateau_patience: int = 1
    cosine_steps: int | None = None
    cosine_seconds: float | None = None
    min_lr: float = 0.0
    accumulate: int = 1
    clip_grad_norm: float | None = 5.0
    nan_policy: str = "stop"
    select_metric: str | None = None
    patience: int | None = None
    min_delta: float = 0.0
    eval_split: str = "valid"
    eval_every: int | None = None
    eval_on_stop: bool = True
    checkpoint_every: int | None = None
    keep_best: int = 1
    keep_last: int = 0
    log_samples: int = 3
    log_every: int = 10
    seed: int = 0
    progress: bool | None = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        self.optimizer = str(self.optimizer).lower()
        self.decay = str(self.decay).lower()
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("decay", self.decay, DECAYS)
        check_choice("nan_policy", self.nan_policy, NAN_POLICIES)
        for name in ("epochs", "warmup_steps", "keep_last", "log_samples", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("decay_every", "plateau_patience", "log_every", "accumulate", "keep_best"):
            check_int(name, getattr(self, name), minimum=1)
        if self.decay_start is not None:
            check_int("decay_start", self.decay_start, minimum=0)
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) == 0 and not isinstance(getattr(self, name), bool):
                setattr(self, name, None)  # 0: at epoch ends only (a config file cannot write None)
        if self.patience is not None:
            check_int("patience", self.patience, minimum=0)  # 0: never stop early, as None
        for name in ("max_steps", "cosine_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        if self.select_metric is not None and (not isinstance(self.select_metric, str) or not self.select_metric):
            raise ValueError(f"select_metric must be a metric name or None (the task's own), got "
                             f"{self.select_metric!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.min_lr, int | float) and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr!r}")
        if not 0 < self.decay_gamma <= 1:
            raise ValueError(f"decay_gamma must be in (0, 1], got {self.decay_gamma!r}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"weight_decay must be >= 0 and momentum in [0, 1), got {self.weight_decay!r}, "
                             f"{self.momentum!r}")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive or None (no clipping), "
                             f"got {self.clip_grad_norm!r}")
        if self.cosine_seconds is not None:
            if not (isinstance(self.cosine_seconds, int | float) and not isinstance(self.cosine_seconds, bool)
                    and 0 <= self.cosine_seconds < math.inf):
                raise ValueError(f"cosine_seconds must be a number of seconds >= 0 (0: off), "
                                 f"got {self.cosine_seconds!r}")
            if self.cosine_seconds == 0:
                self.cosine_seconds = None  # off, as a config file or flag writes None
            elif self.cosine_steps is not None:
                raise ValueError("give the cosine horizon once: cosine_steps or cosine_seconds, not both")
        if self.time_budget is not None and not self.time_budget >= 0:
            raise ValueError(f"time_budget must be a number of seconds >= 0, got {self.time_budget!r}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Settings that change the trajectory: a resumed run with different values cannot continue exactly.
TRAJECTORY_SETTINGS = ("optimizer", "lr", "weight_decay", "momentum", "betas", "warmup_steps", "decay",
                        "decay_gamma", "decay_every", "decay_start", "plateau_patience", "cosine_steps",
                        "cosine_seconds", "min_lr", "clip_grad_norm", "nan_policy", "seed", "eval_every",
                        "min_delta", "accumulate", "select_metric")


# ----------------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ----------------------------------------------------------------------------------------------------------


class LearningRateSchedule:
    """lr_s = warm-up(s) x decay(s); see :class:`TrainingConfig` for the formulas. All state is scalars."""

    def __init__(self, settings: TrainingConfig, higher_is_better: bool) -> None:
        self.settings = settings
        self.higher_is_better = higher_is_better
        self.total_steps: int | None = settings.cosine_steps  # cosine horizon T, fixed at the first epoch
        self.plateau_reductions = 0
        self.plateau_best: float | None = None
        self.plateau_bad = 0

    def lr(self, step: int, epoch: int, elapsed: float = 0.0) -> float:
        """The learning rate of 1-based step ``step`` in 0-based epoch ``epoch``, ``elapsed`` seconds into the
        run (read by cosine decay over ``cosine_seconds`` only)."""
        s = self.settings
        warmup = min(1.0, step / s.warmup_steps) if s.warmup_steps > 0 else 1.0
        if s.decay == "step":
            start = s.decay_every if s.decay_start is None else s.decay_start
            times = 0 if epoch < start else 1 + (epoch - start) // s.decay_every
            decayed = max(s.min_lr, s.lr * s.decay_gamma ** times)
        elif s.decay == "plateau":
            decayed = max(s.min_lr, s.lr * s.decay_gamma ** self.plateau_reductions)
        elif s.decay == "cosine":
            progress = self._cosine_progress(step, elapsed)
            decayed = s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        elif s.decay == "inverse-sqrt":
            # Vaswani et al. 2017 (eq. 3) without the model-size factor: lr * sqrt(W) / sqrt(s) after warm-up
            horizon = max(1, s.warmup_steps)
            decayed = max(s.min_lr, s.lr * math.sqrt(horizon / max(step, horizon)))
        else:
            decayed = s.lr
        return warmup * decayed

    def _cosine_progress(self, step: int, elapsed: float) -> float:
        """How far along its horizon cosine decay is, in [0, 1]: by the clock over ``cosine_seconds`` when set,
        else by the steps after warm-up over ``total_steps``."""
        s = self.settings
        if s.cosine_seconds is not None:
            return min(1.0, max(0.0, elapsed / s.cosine_seconds))
        if self.total_steps is None:
            raise ValueError("cosine decay needs its horizon: set cosine_steps or max_steps, or make "
                             "train_batches return a sized collection (len())")
        span = max(1, self.total_steps - s.warmup_steps)
        return min(1.0, max(0.0, (step - s.warmup_steps) / span))

    def observe(self, value: float) -> None:
        """Record an evaluation of the primary metric (plateau decay)."""
        if self.settings.decay != "plateau":
            return
        if improves(value, self.plateau_best, self.higher_is_better, self.settings.min_delta):
            self.plateau_best, self.plateau_bad = value, 0
            return
        self.plateau_bad += 1
        if self.plateau_bad >= self.settings.plateau_patience:
            self.plateau_reductions += 1
            self.plateau_bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"total_steps": self.total_steps, "plateau_reductions": self.plateau_reductions,
                "plateau_best": self.plateau_best, "plateau_bad": self.plateau_bad}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.total_steps = state["total_steps"]
        self.plateau_reductions = int(state["plateau_reductions"])
        self.plateau_best = state["plateau_best"]
        self.plateau_bad = int(state["plateau_bad"])


def higher_is_better(metric: str, task: Any = None) -> bool:
    """Whether a larger ``metric`` is better: the task's own ``higher_is_better`` for its ``primary_metric``,
    else False for error-like names (the last part of the name in LOWER_IS_BETTER: ``loss``, ``naive_rmse``,
    ``wer``), True for the others (accuracy, F1, BLEU, chrF, exact match)."""
    if task is not None and metric == getattr(task, "primary_metric", "loss"):
        return bool(getattr(task, "higher_is_better", False))
    return metric.rsplit("_", 1)[-1] not in LOWER_IS_BETTER and metric not in LOWER_IS_BETTER


def improves(value: float, best: float | None, higher_is_better: bool, min_delta: float) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


def build_optimizer(settings: TrainingConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    if not parameters:
        raise ValueError("the task's model has no trainable parameters")
    # Adam's fused kernel updates every parameter in one pass per tensor (torch's default on the CPU is a Python
    # loop of several operations per tensor): the same update rule (equal to rounding), less time per step (see
    # benchmarks/results/step_profile.md); float parameters on the CPU or CUDA only.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters) or None
    if settings.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=settings.lr, betas=settings.betas,
                                weight_decay=settings.weight_decay, fused=fused)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=settings.lr, betas=settings.betas,
                                 weight_decay=settings.weight_decay, fused=fused)
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)

