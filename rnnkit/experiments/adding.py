"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4; in the form of Arjovsky et al. 2016, sec. 4.2).

Each input step is x_t = (u_t, m_t) with u_t ~ U(0, 1); exactly two markers m_t are 1, one in each half of the
sequence, and the target is the sum of the two marked values. Predicting the constant E[y] = 1 scores
MSE = Var[y] = 1/6 ~ 0.167, so a model has learnt something only below that. The first marker lies 50 to 100
steps before the end at T = 100: the error signal must travel that far back.

The claim checked in the full setting: with T = 100, LSTM and GRU reach test MSE < 0.01 within 3,000 steps,
while a tanh RNN stays at the baseline (>= 0.15). Setting: one layer of 64 units read out from h_T, Adam
(lr 1e-2), batches of 64, gradient clipping at global norm 1, LSTM forget-gate bias 1 (Gers et al. 2000).

Quick setting (CI): T = 100 still, but 400 steps: the GRU usually solves it by then, the LSTM often has not
left its plateau yet; the report says what happened.

Example::

    from rnnkit.experiments.adding import AddingConfig, run_config
    figures = run_config(AddingConfig(steps=3000), out=Path("runs/adding"))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rnnkit.data.generated import adding_problem
from rnnkit.experiments.harness import (
    CELL_LABELS,
    TrainLog,
    finish,
    fit,
    mean_squared_error,
    memory_regressor,
    plot_curves,
    threads,
)

__all__ = ["BASELINE_MSE", "AddingConfig", "QUICK", "FULL", "train_cells", "run_config", "run"]

#: Predicting the mean E[y] = 1: MSE = Var[u_1 + u_2] = 2/12.
BASELINE_MSE = 1.0 / 6.0
SOLVED_MSE = 0.01  # the claim's threshold for LSTM and GRU
STUCK_MSE = 0.15  # the claim's floor for the tanh RNN


@dataclass
class AddingConfig:
    """Settings of the adding experiment (defaults: the full setting)."""

    T: int = 100
    cells: tuple[str, ...] = ("lstm", "gru", "rnn")
    hidden_size: int = 64
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-2
    clip_norm: float = 1.0
    forget_bias: float = 1.0
    train_size: int = 100_000
    test_size: int = 2000
    eval_every: int = 100
    seed: int = 0
    threads: int | None = None


FULL = AddingConfig()
QUICK = AddingConfig(steps=400, train_size=25_600, test_size=500, eval_every=50)


def train_cells(config: AddingConfig) -> dict[str, TrainLog]:
    """Train one model per cell on the same data; each log's curve is the test MSE."""
    train = adding_problem("train", config.train_size, config.T, seed=config.seed)
    test = adding_problem("test", config.test_size, config.T, seed=config.seed)
    inputs, targets = torch.from_numpy(train.inputs), torch.from_numpy(train.targets)  # (N, T, 2), (N,)
    test_inputs, test_targets = torch.from_numpy(test.inputs), torch.from_numpy(test.targets)
    logs = {}
    for cell in config.cells:
        torch.manual_seed(config.seed)
        model = memory_regressor(cell, 2, config.hidden_size, forget_bias=config.forget_bias)
        logs[cell] = fit(
            model, lambda index: ((inputs[index],), targets[index]), len(inputs),
            steps=config.steps, batch_size=config.batch_size, lr=config.lr, clip_norm=config.clip_norm,
            seed=config.seed, evaluate=lambda m: mean_squared_error(m, test_inputs, test_targets),
            eval_every=config.eval_every,
        )  # fmt: skip
    return logs


def run_config(config: AddingConfig, out: Path) -> dict[str, Any]:
    """Run the experiment with ``config``, write the report into ``out`` and return its figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with threads(config.threads):
        logs = train_cells(config)
    figures: dict[str, Any] = {"T": config.T, "steps": config.steps, "baseline_mse": BASELINE_MSE}
    for cell, log in logs.items():
        figures[cell] = {
            "final_test_mse": log.eval_values[-1],
            "best_test_mse": min(log.eval_values),
            "first_step_below_0.01": log.first_step_below(SOLVED_MSE),
            "train_seconds": log.seconds,
            "curve": {"step": log.eval_steps, "test_mse": log.eval_values},
        }
    gated = [c for c in ("lstm", "gru") if c in logs]
    figures["claim"] = {
        "gated_below_0.01": {c: figures[c]["first_step_below_0.01"] is not None for c in gated},
        "rnn_at_least_0.15": figures["rnn"]["final_test_mse"] >= STUCK_MSE if "rnn" in logs else None,
    }
    figures["claim"]["holds"] = all(figures["claim"]["gated_below_0.01"].values()) and bool(
        figures["claim"]["rnn_at_least_0.15"] is not False)
    plot = plot_curves(
        {CELL_LABELS[c]: (log.eval_steps, log.eval_values) for c, log in logs.items()},
        out / "test_mse.png", title=f"Adding problem, T = {config.T}", ylabel="test MSE", log_y=True,
        lines={"predict the mean: 1/6": BASELINE_MSE, "0.01": SOLVED_MSE},
    )  # fmt: skip
    summary = {
        CELL_LABELS[c]: f"final {figures[c]['final_test_mse']:.4f}, best {figures[c]['best_test_mse']:.4f}, "
                        f"below 0.01 at step {figures[c]['first_step_below_0.01']}, "
                        f"{figures[c]['train_seconds']:.0f} s"
        for c in logs
    }
    text = [
        f"Test MSE on {config.test_size} held-out sequences of length T = {config.T}; predicting the mean scores "
        f"1/6 = {BASELINE_MSE:.3f}. Claim (full setting): LSTM and GRU below 0.01 within 3,000 steps, tanh "
        f"RNN at or above 0.15. Claim holds in this run: {figures['claim']['holds']}.",
    ]
    return finish(out, "Adding problem", figures, config=config, plots=[plot], tables={"test MSE": summary},
                  text=text)


def run(quick: bool, out: Path, seed: int = 0) -> dict[str, Any]:
    """The registry entry: the quick (CI) or full setting with ``seed``."""
    return run_config(replace(QUICK if quick else FULL, seed=seed), out)
