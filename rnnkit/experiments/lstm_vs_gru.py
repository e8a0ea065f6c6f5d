"""LSTM against GRU on the same task and the same parameter budget.

The course's claim: a GRU has 3/4 of an LSTM's parameters at the same hidden size (3 gate blocks instead of 4:
3[n(d + n) + n] against 4[n(d + n) + n]) and trains about 20 % faster. Measured here on the sequential-digits
task (8x8 digits, one pixel per step, :mod:`rnnkit.experiments.sequential_digits`), three models:

* the LSTM with ``hidden_size`` units: its total parameter count is the budget;
* a GRU with the hidden size whose total count is closest to that budget (solved by :func:`equal_budget_hidden`;
  about sqrt(4/3) times the LSTM's, since the recurrent weights grow as n^2);
* a GRU with the LSTM's hidden size (3/4 of the recurrent parameters).

Each is trained for the same number of epochs with the same batches; the report gives test accuracy, training
time per epoch (evaluation excluded; the median epoch, on the layers' default path, ``use_fused="auto"``:
torch's oneDNN kernel for the LSTM, rnnkit's fast path for the GRU, each the faster one for its cell), the time
of one forward + backward pass on torch's fused kernel and on rnnkit's own path (the same implementation for
both cells: the comparison of the cells themselves), and parameters.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnkit.experiments.harness import accuracy, finish, memory_classifier, plot_curves, threads
from rnnkit.experiments.sequential_digits import DigitsConfig, digits_tensors, train_digits

__all__ = ["LstmGruConfig", "QUICK", "FULL", "model_parameters", "equal_budget_hidden", "time_paths", "run_config",
           "run"]


@dataclass
class LstmGruConfig:
    """Settings: the LSTM's hidden size (which sets the budget) and the digits training settings."""

    lstm_hidden_size: int = 64
    digits: DigitsConfig = field(default_factory=lambda: DigitsConfig(cells=("lstm", "gru"), epochs=60))
    timing_batches: int = 30  # forward + backward passes timed on each path (after 3 warm-up passes)
    threads: int | None = None


FULL = LstmGruConfig()
QUICK = LstmGruConfig(digits=DigitsConfig(cells=("lstm", "gru"), epochs=15), timing_batches=10)


def model_parameters(cell: str, hidden_size: int, input_size: int = 1, num_classes: int = 10) -> int:
    """Total parameters of the digits classifier with this cell and hidden size (recurrent layer + read-out)."""
    model = memory_classifier(cell, input_size, hidden_size, num_classes, forget_bias=None)
    return sum(p.numel() for p in model.parameters())


def equal_budget_hidden(budget: int, cell: str, input_size: int = 1, num_classes: int = 10) -> int:
    """The hidden size n whose model has the parameter count closest to ``budget`` (ties: the smaller n).

    The count grows strictly with n (G n^2 + ... ), so a scan up to the first count past the budget finds it.
    """
    if budget < 1:
        raise ValueError(f"budget must be a positive number of parameters, got {budget}")
    best, best_gap, n = 1, None, 1
    while True:
        count = model_parameters(cell, n, input_size, num_classes)
        gap = abs(count - budget)
        if best_gap is None or gap < best_gap:
            best, best_gap = n, gap
        if count >= budget:
            return best
        n += 1


def time_paths(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batches: int) -> dict[str, float]:
    """Median seconds of one forward + backward pass over a batch, on torch's fused kernel (``use_fused=True``)
    and on rnnkit's own path (``use_fused=False``: the fast path of :mod:`rnnkit.fast`, the same for both
    cells)."""
    layer = model.encoder.recurrent
    default = layer.use_fused
    timings = {}
    for path, fused in (("fused", True), ("own", False)):
        layer.use_fused = fused
        samples = []
        for index in range(batches + 3):
            started = time.perf_counter()
            model.zero_grad(set_to_none=True)
            model.loss(model(inputs), labels).backward()
            if index >= 3:  # the first passes warm up allocators and caches
                samples.append(time.perf_counter() - started)
        timings[path] = statistics.median(samples)
    layer.use_fused = default
    model.zero_grad(set_to_none=True)
    return timings


def run_config(config: LstmGruConfig, out: Path) -> dict[str, Any]:
    """Train the three models, write the report into ``out`` and return its figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digits = config.digits
    data = digits_tensors(digits.steps_per_image, digits.seed)
    input_size = data["train"][0].shape[2]
    budget = model_parameters("lstm", config.lstm_hidden_size, input_size)
    gru_hidden = equal_budget_hidden(budget, "gru", input_size)
    models = {
        f"LSTM, n = {config.lstm_hidden_size}": ("lstm", config.lstm_hidden_size),
        f"GRU, n = {gru_hidden} (same budget)": ("gru", gru_hidden),
        f"GRU, n = {config.lstm_hidden_size} (same n)": ("gru", config.lstm_hidden_size),
    }
    figures: dict[str, Any] = {"budget": budget, "gru_equal_budget_hidden": gru_hidden, "models": {}}
    curves = {}
    test_inputs, test_labels = data["test"]
    with threads(config.threads):
        for label, (cell, hidden) in models.items():
            model, log = train_digits(cell, hidden, digits, data)
            batch = data["train"][0][: digits.batch_size], data["train"][1][: digits.batch_size]
            figures["models"][label] = {
                "cell": cell,
                "hidden_size": hidden,
                "parameters": sum(p.numel() for p in model.parameters()),
                "test_accuracy": accuracy(model, test_inputs, test_labels),
                # the median is steadier than the mean when other processes share the machine
                "seconds_per_epoch": statistics.median(log.epoch_seconds),
                "epochs": len(log.epoch_seconds),
                "seconds_per_batch": time_paths(model, *batch, config.timing_batches),
            }
            curves[label] = (list(range(1, len(log.eval_values) + 1)), log.eval_values)
    lstm, same_budget, same_n = figures["models"].values()
    figures["ratios"] = {
        "gru_same_n_parameters_over_lstm": same_n["parameters"] / lstm["parameters"],
        "gru_same_n_time_over_lstm": same_n["seconds_per_epoch"] / lstm["seconds_per_epoch"],
        "gru_same_budget_time_over_lstm": same_budget["seconds_per_epoch"] / lstm["seconds_per_epoch"],
        "gru_same_n_own_path_time_over_lstm": same_n["seconds_per_batch"]["own"] / lstm["seconds_per_batch"]["own"],
    }
    plots = [plot_curves(curves, out / "valid_accuracy.png", xlabel="epoch", ylabel="validation accuracy",
                         title="LSTM vs GRU, 8x8 digits one pixel a step")]
    table = {label: f"test accuracy {f['test_accuracy']:.3f}, {f['parameters']:,} parameters, "
                    f"{f['seconds_per_epoch']:.3f} s per epoch; one batch forward + backward "
                    f"{1000 * f['seconds_per_batch']['fused']:.1f} ms fused, "
                    f"{1000 * f['seconds_per_batch']['own']:.1f} ms on rnnkit's own path"
             for label, f in figures["models"].items()}
    ratios = figures["ratios"]
    text = [
        f"Budget: the LSTM with n = {config.lstm_hidden_size} has {budget:,} parameters; the GRU with the closest "
        f"count has n = {gru_hidden} ({same_budget['parameters']:,}).",
        f"At the same hidden size the GRU has {ratios['gru_same_n_parameters_over_lstm']:.3f} of the LSTM's "
        f"parameters and takes {ratios['gru_same_n_time_over_lstm']:.3f} of its time per epoch on the default "
        "path (torch's oneDNN LSTM kernel against rnnkit's GRU fast path, the fastest of each here), "
        f"{ratios['gru_same_n_own_path_time_over_lstm']:.3f} of its time per forward + backward pass when both "
        "run the same implementation (rnnkit's own path). The course: 3/4 of the parameters and about 0.8 of "
        "the time.",
    ]
    return finish(out, "LSTM vs GRU", figures, config=config, plots=plots, tables={"results": table}, text=text)


def run(quick: bool, out: Path, seed: int = 0) -> dict[str, Any]:
    """The registry entry: the quick (CI) or full setting with ``seed``."""
    config = QUICK if quick else FULL
    return run_config(replace(config, digits=replace(config.digits, seed=seed)), out)
