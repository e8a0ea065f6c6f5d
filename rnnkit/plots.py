r"""Every figure rnnkit draws, in one place: training curves, attention heatmaps, forecasts, experiment curves,
and the instruments' gradient-through-time, gate and state-norm plots.

Each function takes plain values (lists, arrays, tensors, the dataclasses of :mod:`rnnkit.diagnostics`),
writes one PNG file with matplotlib's non-interactive Agg backend (so it works on machines without a screen)
and returns its path. matplotlib is imported on the first figure, not with rnnkit. The modules that compute
what is shown call these: :mod:`rnnkit.report` (run reports), :mod:`rnnkit.experiments`,
:mod:`rnnkit.diagnostics` (which re-exports the instrument plots under their old names).

Example::

    from rnnkit.plots import plot_attention, plot_curves
    plot_curves({"LSTM": (steps, losses)}, "loss.png", title="Adding problem", ylabel="test MSE", log_y=True)
    plot_attention(weights, src_tokens, tgt_tokens, "attention.png")    # weights (T, S)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rnnkit.diagnostics import LayerTrace

__all__ = [
    "plot_training_curves",
    "plot_attention",
    "plot_forecast",
    "plot_curves",
    "plot_curve_panels",
    "plot_gradient_norms",
    "plot_gates",
    "plot_state_norms",
]


def _pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: rnnkit's import stays light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: str | Path, **options: Any) -> Path:
    """Write ``fig`` to ``out_png`` at 100 dpi, close it (pyplot keeps every open figure), return the path."""
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100, **options)
    _pyplot().close(fig)
    return out_png


def _missing_as_nan(values: Sequence[float | None]) -> list[float]:
    """None (an undefined statistic) as NaN, which matplotlib leaves out of a line."""
    return [np.nan if v is None else v for v in values]


# ----------------------------------------------------------------------------------------------------------
# Runs: training curves, attention, forecasts
# ----------------------------------------------------------------------------------------------------------


def _series(events: Sequence[Mapping], split: str, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` in the events of ``split``, read at the top level or in ``metrics``."""
    xs, ys = [], []
    for event in events:
        if event.get("split") != split:
            continue
        value = event.get(key)
        if value is None and isinstance(event.get("metrics"), Mapping):
            value = event["metrics"].get(key)
        if isinstance(value, int | float) and math.isfinite(value) and "step" in event:
            xs.append(event["step"])
            ys.append(float(value))
    return xs, ys


def plot_training_curves(events: Sequence[Mapping], out_png: str | Path, title: str = "Training curves") -> Path:
    """Training and validation loss against the step, and each validation metric on its own axis.

    ``events`` are the records of a ``metrics.jsonl`` (``split`` is "train" or "valid", ``step``, ``loss``
    and an optional ``metrics`` dict); :func:`rnnkit.report.plot_training_curves` also takes the file.
    """
    plt = _pyplot()
    metric_names = sorted({name for e in events if e.get("split") == "valid"
                           for name in (e.get("metrics") or {}) if name != "loss"})
    n_axes = 1 + len(metric_names)
    fig, axes = plt.subplots(1, n_axes, figsize=(5 * n_axes, 3.6), squeeze=False)
    ax = axes[0][0]
    for split, style in (("train", "-"), ("valid", "o-")):
        xs, ys = _series(events, split, "loss")
        if xs:
            ax.plot(xs, ys, style, label=f"{split} loss", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if ax.lines:
        ax.legend()
        if all(y > 0 for line in ax.lines for y in line.get_ydata()):
            ax.set_yscale("log")
    for ax, name in zip(axes[0][1:], metric_names, strict=True):
        xs, ys = _series(events, "valid", name)
        ax.plot(xs, ys, "o-", markersize=3, color="tab:green")
        ax.set_xlabel("step")
        ax.set_title(f"valid {name}")
    fig.tight_layout()
    return _save(fig, out_png)


def plot_attention(weights, source_tokens: Sequence[str], target_tokens: Sequence[str],
                   out_png: str | Path, title: str = "Attention") -> Path:
    """Heatmap of attention weights, rows = target steps, columns = source positions.

    ``weights`` is a (T, S) array or tensor with T = len(target_tokens), S = len(source_tokens).
    """
    matrix = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if matrix.shape != (len(target_tokens), len(source_tokens)):
        raise ValueError(f"attention weights have shape {matrix.shape}, expected "
                         f"(len(target_tokens), len(source_tokens)) = ({len(target_tokens)}, {len(source_tokens)})")
    plt = _pyplot()
    width = max(4.0, 0.32 * len(source_tokens) + 1.5)
    height = max(3.0, 0.32 * len(target_tokens) + 1.2)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(1e-9, float(matrix.max())))
    ax.set_xticks(range(len(source_tokens)), [_show(t) for t in source_tokens], rotation=90)
    ax.set_yticks(range(len(target_tokens)), [_show(t) for t in target_tokens])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return _save(fig, out_png)


def _show(token: str) -> str:
    """A token as a tick label: a space is drawn as the open-box sign."""
    return "␣" if token == " " else token


def plot_forecast(history: Sequence[float], actual: Sequence[float], steps: Sequence[int],
                  predicted: Sequence[float], horizon: int, out_png: str | Path) -> Path:
    """The end of a series' history (the last 2 x len(actual) values), the actual values that follow it and the
    model's forecasts at time steps ``steps`` (indices into history + actual), made ``horizon`` steps ahead."""
    plt = _pyplot()
    shown = history[-2 * len(actual):]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(range(len(history) - len(shown), len(history)), shown, label="history", color="#555")
    ax.plot(range(len(history), len(history) + len(actual)), actual, "o-", markersize=3, label="actual (test)",
            color="#1f77b4")
    ax.plot(steps, predicted, "s--", markersize=3, label=f"forecast, {horizon} step(s) ahead", color="#d62728")
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.set_title(f"rolling {horizon}-step forecasts over the test split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


# ----------------------------------------------------------------------------------------------------------
# Experiments
# ----------------------------------------------------------------------------------------------------------


def plot_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out_png: str | Path,
    *,
    title: str,
    xlabel: str = "training step",
    ylabel: str,
    log_y: bool = False,
    lines: Mapping[str, float] | None = None,
) -> Path:
    """One line per curve ``label -> (xs, ys)`` (non-finite values left out), with labelled horizontal
    reference ``lines`` (e.g. a baseline)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    _draw_curves(ax, curves, title=title, xlabel=xlabel, ylabel=ylabel, log_y=log_y, lines=lines)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_curve_panels(panels: Sequence[Mapping[str, Any]], out_png: str | Path, *, title: str) -> Path:
    """Several :func:`plot_curves` side by side in one figure: each panel is a mapping of that function's keyword
    arguments (``curves``, ``title``, ``ylabel``; optionally ``xlabel``, ``log_y``, ``lines``)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        _draw_curves(ax, **panel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out_png)


def _draw_curves(
    ax,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str = "training step",
    ylabel: str,
    log_y: bool = False,
    lines: Mapping[str, float] | None = None,
) -> None:
    for label, (xs, ys) in curves.items():
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)
                  and (y > 0 or not log_y)]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1.5)
    for label, value in (lines or {}).items():
        ax.axhline(value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


# ----------------------------------------------------------------------------------------------------------
# Instruments: gradient through time, gates, state norms (rnnkit.diagnostics)
# ----------------------------------------------------------------------------------------------------------


def plot_gradient_norms(
    curves: Mapping[str, Sequence[float | None]],
    out_png: str | Path,
    *,
    title: str = "Gradient through time",
    normalise: bool = False,
    ylabel: str | None = None,
) -> Path:
    """||dL/dh_t|| against the distance T - t from the last step, on a log scale, one line per curve.

    ``curves`` maps a label to the norms in time order (position t = 0 .. T-1, as ``LayerTrace.grad_norm``);
    zeros and None are left out (a log axis cannot show them). ``normalise`` divides each curve by its value
    at the last step, so curves of different scales start at 1.
    """
    if not curves:
        raise ValueError("plot_gradient_norms needs at least one curve, got none")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, norms in curves.items():
        values = list(norms)
        last = values[-1] if values else None
        xs, ys = [], []
        for distance, value in enumerate(reversed(values)):
            if value is None or not math.isfinite(value) or value <= 0:
                continue
            if normalise:
                if not last:
                    continue
                value = value / last
            xs.append(distance)
            ys.append(value)
        ax.plot(xs, ys, label=label, linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("distance from the last step, T - t")
    ax.set_ylabel(ylabel or ("||dL/dh_t|| / ||dL/dh_T||" if normalise else "||dL/dh_t||"))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_gates(trace: LayerTrace, out_png: str | Path, *, title: str | None = None, max_units: int = 64,
               saturation: tuple[float, float] | None = None) -> Path:
    """Gate heatmaps of one layer-direction: for each gate, the batch-mean activation of each unit (rows, at most
    ``max_units``) at each step (columns), on a fixed 0..1 colour scale, and beneath them the mean activation
    and saturated fraction per step. ``saturation`` (low, high), the thresholds the saturated fraction was
    counted with, is named in the default title."""
    if not trace.gates:
        raise ValueError(f"{trace.name} has no gate statistics (an RNN cell has no gates, or gates=False)")
    plt = _pyplot()
    names = list(trace.gates)
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(8, 1.9 * (len(names) + 1)), squeeze=False)
    image = None
    for ax, name in zip(axes[:-1, 0], names, strict=True):
        unit_mean = np.array([_missing_as_nan(row) for row in trace.gates[name].unit_mean], dtype=float)  # (T, H)
        image = ax.imshow(unit_mean[:, :max_units].T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                          interpolation="nearest")
        ax.set_ylabel(f"{name}\nunit")
    bottom = axes[-1, 0]
    for name in names:
        stats = trace.gates[name]
        steps = range(len(stats.mean))
        bottom.plot(steps, _missing_as_nan(stats.mean), label=f"{name} mean")
        bottom.plot(steps, _missing_as_nan(stats.saturated), "--", label=f"{name} saturated")
    bottom.set_ylim(0, 1)
    bottom.set_xlim(-0.5, trace.steps - 0.5)
    bottom.set_xlabel("step t")
    bottom.legend(fontsize=7, ncol=2)
    if title is None:
        title = f"Gates of {trace.name} ({trace.cell})"
        if saturation is not None:
            title += f"; saturated: < {saturation[0]} or > {saturation[1]}"
    axes[0, 0].set_title(title)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:-1, 0]), fraction=0.03)
    return _save(fig, out_png, bbox_inches="tight")


def plot_state_norms(traces: Sequence[LayerTrace], out_png: str | Path, *, title: str = "State norms") -> Path:
    """Mean ||h_t|| (solid) and, for LSTMs, ||c_t|| (dashed) per step, one line per layer-direction."""
    if not traces:
        raise ValueError("plot_state_norms needs at least one trace, got none")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for trace in traces:
        steps = range(trace.steps)
        line = ax.plot(steps, _missing_as_nan(trace.hidden_norm), label=f"{trace.name} ||h||")
        if trace.cell_norm is not None:
            ax.plot(steps, _missing_as_nan(trace.cell_norm), "--", color=line[0].get_color(),
                    label=f"{trace.name} ||c||")
    ax.set_xlabel("step t")
    ax.set_ylabel("mean norm over the batch")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)
