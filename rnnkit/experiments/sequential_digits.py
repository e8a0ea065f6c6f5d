"""Sequential digits: scikit-learn's 8x8 handwritten digits read one pixel per step (64 steps), a small cousin of
pixel-by-pixel MNIST (Le et al. 2015): the class must be remembered from strokes seen up to 64 steps before
the read-out.

tanh RNN vs LSTM vs GRU, each one layer read out from h_64, trained on the 1,437 training images and tested on
180 held-out ones (:func:`rnnkit.data.generated.sequential_digits`). The full setting trains for 150 epochs;
the quick setting for 20. The report gives test accuracy, validation curves and training time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rnnkit.data.generated import sequential_digits
from rnnkit.experiments.harness import CELL_LABELS, TrainLog, accuracy, finish, fit, memory_classifier, plot_curves
from rnnkit.experiments.harness import threads as limit_threads

__all__ = ["DigitsConfig", "QUICK", "FULL", "digits_tensors", "train_digits", "run_config", "run"]


@dataclass
class DigitsConfig:
    """Settings (defaults: the full setting)."""

    cells: tuple[str, ...] = ("rnn", "lstm", "gru")
    hidden_size: int = 64
    steps_per_image: int = 64  # 64: one pixel a step; 8: one row a step
    epochs: int = 150
    batch_size: int = 64
    lr: float = 5e-3
    clip_norm: float = 1.0
    forget_bias: float = 1.0
    seed: int = 0
    threads: int | None = None


FULL = DigitsConfig()
QUICK = DigitsConfig(epochs=20)


def digits_tensors(steps: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{split: (inputs (N, steps, 64 / steps) float32, labels (N,) int64)}`` for train, valid and test."""
    result = {}
    for split in ("train", "valid", "test"):
        data = sequential_digits(split, steps=steps, seed=seed)
        result[split] = (torch.from_numpy(data.inputs), torch.from_numpy(data.targets))
    return result


def train_digits(cell: str, hidden_size: int, config: DigitsConfig,
                 data: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.nn.Module, TrainLog]:
    """Train one classifier for ``config.epochs`` epochs; the log's curve is the validation accuracy per epoch."""
    inputs, labels = data["train"]
    valid_inputs, valid_labels = data["valid"]
    torch.manual_seed(config.seed)
    model = memory_classifier(cell, inputs.shape[2], hidden_size, 10, forget_bias=config.forget_bias)
    per_epoch = len(inputs) // config.batch_size
    log = fit(
        model, lambda index: ((inputs[index],), labels[index]), len(inputs), steps=config.epochs * per_epoch,
        batch_size=config.batch_size, lr=config.lr, clip_norm=config.clip_norm, seed=config.seed,
        evaluate=lambda m: accuracy(m, valid_inputs, valid_labels), eval_every=per_epoch,
    )  # fmt: skip
    return model, log


def run_config(config: DigitsConfig, out: Path) -> dict[str, Any]:
    """Train one model per cell, write the report into ``out`` and return its figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = digits_tensors(config.steps_per_image, config.seed)
    test_inputs, test_labels = data["test"]
    figures: dict[str, Any] = {"steps_per_image": config.steps_per_image, "epochs": config.epochs, "models": {}}
    curves = {}
    with limit_threads(config.threads):
        for cell in config.cells:
            model, log = train_digits(cell, config.hidden_size, config, data)
            figures["models"][cell] = {
                "test_accuracy": accuracy(model, test_inputs, test_labels),
                "best_valid_accuracy": max(log.eval_values),
                "parameters": sum(p.numel() for p in model.parameters()),
                "train_seconds": log.seconds,
                "seconds_per_epoch": sum(log.epoch_seconds) / max(len(log.epoch_seconds), 1),
                "curve": {"epoch": list(range(1, len(log.eval_values) + 1)), "valid_accuracy": log.eval_values},
            }
            curves[CELL_LABELS[cell]] = (list(range(1, len(log.eval_values) + 1)), log.eval_values)
    plots = [plot_curves(curves, out / "valid_accuracy.png", xlabel="epoch", ylabel="validation accuracy",
                         title=f"8x8 digits, {config.steps_per_image} steps per image",
                         lines={"chance": 0.1})]
    table = {CELL_LABELS[c]: f"test accuracy {f['test_accuracy']:.3f}, {f['parameters']:,} parameters, "
                             f"{f['seconds_per_epoch']:.2f} s per epoch"
             for c, f in figures["models"].items()}
    text = [f"Test accuracy on {len(test_labels)} held-out images after {config.epochs} epochs (no early "
            "stopping); one layer, read out from the last state."]
    return finish(out, "Sequential digits", figures, config=config, plots=plots, tables={"test accuracy": table},
                  text=text)


def run(quick: bool, out: Path, seed: int = 0) -> dict[str, Any]:
    """The registry entry: the quick (CI) or full setting with ``seed``."""
    return run_config(replace(QUICK if quick else FULL, seed=seed), out)
