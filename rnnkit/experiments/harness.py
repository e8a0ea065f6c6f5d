"""What the classic experiments share: their models, one training loop, evaluation, curves and the written report.

Each experiment module builds models with :func:`memory_regressor` / :func:`memory_classifier` (a
unidirectional rnnkit layer read out from its last state, the setting of the memory tasks), trains them with
:func:`fit` (Adam or SGD, global-norm clipping, seeded batches, timed), and ends with :func:`finish`, which
writes ``results.json`` (its figures) and ``report.html`` (through :func:`rnnkit.report.write_report`) into
the output directory; :func:`plot_curves` (from :mod:`rnnkit.plots`) draws their curves.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rnnkit.layers import LSTM
from rnnkit.models import (
    SequenceClassifier,
    SequenceClassifierConfig,
    SequenceRegressor,
    SequenceRegressorConfig,
)
from rnnkit.plots import plot_curves  # re-exported: the experiments draw their curves from here
from rnnkit.report import write_report

__all__ = [
    "CELL_LABELS",
    "Batch",
    "TrainLog",
    "set_forget_bias",
    "memory_regressor",
    "memory_classifier",
    "fit",
    "mean_squared_error",
    "accuracy",
    "plot_curves",
    "finish",
    "jsonable",
    "threads",
]

#: How the reports name the cells.
CELL_LABELS = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}

#: A batch: the model's positional inputs and the targets, ``model.loss(model(*inputs), targets)``.
Batch = tuple[tuple[Any, ...], Tensor]


def set_forget_bias(model: nn.Module, value: float) -> None:
    """Set the forget-gate bias of every rnnkit LSTM layer in ``model`` to ``value`` (b_if = value, b_hf = 0).

    A forget gate that starts near sigma(1) = 0.73 instead of 0.5 keeps the cell state, and its gradient,
    over many more steps at the start of training (Gers et al. 2000; Jozefowicz et al. 2015, section 3.2).
    """
    for module in model.modules():
        if isinstance(module, LSTM):
            hidden = module.hidden_size
            forget = slice(hidden, 2 * hidden)  # gates are stacked i, f, g, o
            with torch.no_grad():
                for name, parameter in module.named_parameters():
                    if name.startswith("bias_ih"):
                        parameter[forget] = value
                    elif name.startswith("bias_hh"):
                        parameter[forget] = 0.0


def memory_regressor(cell: str, input_size: int, hidden_size: int, *, forget_bias: float | None = 1.0,
                     output_size: int = 1) -> SequenceRegressor:
    """x_1..x_T (float features) -> unidirectional ``cell`` layer -> linear read-out of h_T."""
    config = SequenceRegressorConfig(cell=cell, hidden_size=hidden_size, input_size=input_size,
                                     bidirectional=False, pooling="last", output_size=output_size)
    return _with_forget_bias(SequenceRegressor(config), forget_bias)


def memory_classifier(cell: str, input_size: int, hidden_size: int, num_classes: int, *,
                      forget_bias: float | None = 1.0) -> SequenceClassifier:
    """x_1..x_T (float features) -> unidirectional ``cell`` layer -> linear class scores from h_T."""
    config = SequenceClassifierConfig(cell=cell, hidden_size=hidden_size, input_size=input_size,
                                      bidirectional=False, pooling="last", num_classes=num_classes)
    return _with_forget_bias(SequenceClassifier(config), forget_bias)


def _with_forget_bias(model: nn.Module, forget_bias: float | None) -> nn.Module:
    """``model`` with :func:`set_forget_bias` applied (None: the default initialisation kept)."""
    if forget_bias is not None:
        set_forget_bias(model, forget_bias)
    return model


@dataclass
class TrainLog:
    """What :func:`fit` measured.

    Attributes:
        eval_steps, eval_values: the step of each evaluation and what ``evaluate`` returned there.
        step_losses: the training loss of every step; step_grad_norms: the global gradient norm of every step,
            before clipping (Pascanu et al. 2013 clip this norm).
        epoch_seconds: training time of each complete pass over the data (evaluation excluded).
        seconds: all training time (evaluation excluded).
    """

    eval_steps: list[int] = field(default_factory=list)
    eval_values: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    step_grad_norms: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def first_step_below(self, threshold: float) -> int | None:
        """The first evaluated step whose value is below ``threshold`` (None: never)."""
        for step, value in zip(self.eval_steps, self.eval_values, strict=True):
            if math.isfinite(value) and value < threshold:
                return step
        return None

    def first_step_above(self, threshold: float) -> int | None:
        """The first evaluated step whose value is above ``threshold`` (None: never)."""
        for step, value in zip(self.eval_steps, self.eval_values, strict=True):
            if math.isfinite(value) and value > threshold:
                return step
        return None


def fit(
    model: nn.Module,
    make_batch: Callable[[Tensor], Batch],
    size: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    clip_norm: float | None = 1.0,
    optimizer: str = "adam",
    seed: int = 0,
    evaluate: Callable[[nn.Module], float] | None = None,
    eval_every: int = 0,
    decay_at: float | None = None,
    decay_factor: float = 0.3,
    label: str | None = None,
) -> TrainLog:
    """Train ``model`` for ``steps`` steps on shuffled batches of examples 0..size-1.

    Each pass over the data is a fresh seeded permutation cut into batches of ``batch_size`` (the last,
    smaller batch of a pass is dropped, so every step has the same batch size); ``make_batch(indices)``
    turns indices into ``(inputs, targets)`` and the loss is ``model.loss(model(*inputs), targets)``.
    Gradients are clipped to global norm ``clip_norm`` (None: no clipping, the norm is still recorded).
    ``evaluate(model)``, called in eval mode without gradients every ``eval_every`` steps and after the
    last, gives the curve of :class:`TrainLog`. ``decay_at`` (a fraction of ``steps``) multiplies the
    learning rate by ``decay_factor`` from that step on: the loss settles without more steps. Non-finite
    losses are recorded and training goes on (the exploding-gradient experiment shows what that does).
    On a terminal a progress bar (to stderr) shows the steps, the loss and the last evaluation, named
    ``label`` (default: the model's class and cell).
    """
    if steps < 1 or batch_size < 1 or size < batch_size:
        raise ValueError(f"need steps >= 1 and 1 <= batch_size <= size, got steps={steps}, "
                         f"batch_size={batch_size}, size={size}")
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    milestones = [] if decay_at is None else [max(1, round(decay_at * steps))]
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=decay_factor)
    generator = torch.Generator().manual_seed(seed)
    per_epoch = size // batch_size
    log = TrainLog()
    epoch_time = 0.0
    order = torch.randperm(size, generator=generator)
    if label is None:
        label = " ".join(filter(None, (type(model).__name__, getattr(getattr(model, "config", None), "cell", None))))
    bar = tqdm(total=steps, desc=label, unit="step", disable=None, leave=False, mininterval=0.5)
    shown: dict[str, str] = {}
    for step in range(1, steps + 1):
        position = (step - 1) % per_epoch
        if position == 0 and step > 1:
            log.epoch_seconds.append(epoch_time)
            epoch_time = 0.0
            order = torch.randperm(size, generator=generator)
        started = time.perf_counter()
        model.train()
        inputs, targets = make_batch(order[position * batch_size:(position + 1) * batch_size])
        loss = model.loss(model(*inputs), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm if clip_norm else math.inf)
        opt.step()
        schedule.step()
        elapsed = time.perf_counter() - started
        epoch_time += elapsed
        log.seconds += elapsed
        log.step_losses.append(float(loss.detach()))
        log.step_grad_norms.append(float(norm))
        if evaluate is not None and ((eval_every and step % eval_every == 0) or step == steps):
            model.eval()
            with torch.no_grad():
                log.eval_values.append(float(evaluate(model)))
            log.eval_steps.append(step)
            shown["eval"] = f"{log.eval_values[-1]:.4g}"
        if step % 20 == 0 or step == steps:
            shown["loss"] = f"{log.step_losses[-1]:.4g}"
            bar.set_postfix(shown, refresh=False)
        bar.update()
    bar.close()
    if (steps % per_epoch) == 0:
        log.epoch_seconds.append(epoch_time)
    model.eval()
    return log


def _chunks(size: int, chunk: int) -> Iterator[slice]:
    for start in range(0, size, chunk):
        yield slice(start, min(start + chunk, size))


@torch.no_grad()
def mean_squared_error(model: nn.Module, inputs: Tensor, targets: Tensor, chunk: int = 500) -> float:
    """Mean squared error of ``model(inputs)`` (B, 1) against targets (B,), in chunks, in eval mode."""
    model.eval()
    total = 0.0
    for part in _chunks(len(inputs), chunk):
        predictions = model(inputs[part]).squeeze(-1)  # (b,)
        total += float(((predictions - targets[part]) ** 2).sum())
    return total / len(inputs)


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Tensor, targets: Tensor, lengths: Tensor | None = None,
             chunk: int = 500) -> float:
    """Fraction of sequences whose argmax class equals the target, in chunks, in eval mode."""
    model.eval()
    correct = 0
    for part in _chunks(len(inputs), chunk):
        args = (inputs[part],) if lengths is None else (inputs[part], lengths[part])
        correct += int((model(*args).argmax(-1) == targets[part]).sum())
    return correct / len(inputs)


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples, paths and tensors to plain JSON values; non-finite floats to None."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Tensor):
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def finish(
    out: str | Path,
    title: str,
    figures: dict[str, Any],
    *,
    config: Any,
    plots: Sequence[Path] = (),
    tables: Mapping[str, Mapping[str, object]] | None = None,
    text: Sequence[str] = (),
) -> dict[str, Any]:
    """Write ``out/results.json`` (``figures`` and the configuration) and ``out/report.html``; return the
    figures as plain JSON values."""
    out = Path(out)
    figures = jsonable(figures)
    settings = jsonable(config)
    (out / "results.json").write_text(
        json.dumps({"experiment": title, "figures": figures, "config": settings}, indent=1, allow_nan=False)
        + "\n", encoding="utf-8")
    all_tables = dict(tables or {})
    all_tables["configuration"] = {key: json.dumps(value) if isinstance(value, (list, dict)) else value
                                   for key, value in settings.items()}
    write_report(out, title, figures=list(plots), tables=all_tables, text=list(text))
    return figures


@contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch.set_num_threads(count) inside the block (None: leave it), the previous setting after."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
