"""The experiments by name, as ``rnnkit experiment NAME`` runs them.

Every entry is ``run(quick: bool, out: Path, seed: int) -> dict``: it trains and measures, writes
``out/report.html`` (with its plots) and ``out/results.json``, and returns the figures (plain JSON values).
``quick=True`` is the small setting for CI (about a minute or less on 2 cores); ``quick=False`` the full
setting whose claims the report checks.

Example::

    from pathlib import Path
    from rnnkit.experiments.registry import run
    figures = run("adding", quick=True, out=Path("runs/experiments/adding"))

Modules are imported when their experiment runs, so that listing the experiments stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["EXPERIMENTS", "DESCRIPTIONS", "get", "run"]

#: name -> module of rnnkit.experiments that defines ``run(quick, out, seed)``.
_MODULES = {
    "vanishing-gradients": "vanishing_gradients",
    "adding": "adding",
    "copy-memory": "copy_memory",
    "attention-length": "attention_length",
    "sequential-digits": "sequential_digits",
    "lstm-vs-gru": "lstm_vs_gru",
    "sentiment-baselines": "sentiment_baselines",
}

DESCRIPTIONS = {
    "vanishing-gradients": "||dL/dh_t|| against distance for tanh RNN, LSTM, GRU; exploding case with and "
                           "without clipping",
    "adding": "the adding problem, T = 100: LSTM and GRU below MSE 0.01, tanh RNN at the 1/6 baseline",
    "copy-memory": "copy memory against the memoryless baseline 10 ln 8 / (T + 20)",
    "attention-length": "reversal accuracy by source length with and without attention",
    "sequential-digits": "8x8 digits one pixel a step: tanh RNN vs LSTM vs GRU",
    "lstm-vs-gru": "LSTM vs GRU at the same parameter budget: accuracy, time per epoch, parameters",
    "sentiment-baselines": "Rotten Tomatoes: bag of words + logistic regression vs tanh RNN vs LSTM vs BiLSTM",
}

#: The experiment names, in the order the issue lists them.
EXPERIMENTS: tuple[str, ...] = tuple(_MODULES)


def get(name: str) -> Callable[..., dict[str, Any]]:
    """The run function of experiment ``name``; ValueError naming the known experiments otherwise."""
    if name not in _MODULES:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    module = importlib.import_module(f"rnnkit.experiments.{_MODULES[name]}")
    return module.run


def run(name: str, quick: bool = False, out: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Run experiment ``name`` into ``out`` (default ``runs/experiments/NAME``) and return its figures."""
    function = get(name)
    out = Path(out if out is not None else Path("runs") / "experiments" / name)
    out.mkdir(parents=True, exist_ok=True)
    return function(quick=bool(quick), out=out, seed=int(seed))
