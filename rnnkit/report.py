"""Run reports: training curves, attention heatmaps and a small HTML page that shows them.

Everything here reads what a run directory already holds (``metrics.jsonl``, figures passed in) and
writes PNG files plus ``report.html`` beside them. Plots use matplotlib's non-interactive Agg backend so
they work on machines without a screen.

Example::

    from rnnkit.report import plot_training_curves, plot_attention, write_report
    curves = plot_training_curves("runs/demo/metrics.jsonl", "runs/demo/curves.png")
    heat = plot_attention(weights, src_tokens, tgt_tokens, "runs/demo/attention.png")
    write_report("runs/demo", "Demo", figures=[curves, heat], tables={"test": {"exact_match": 0.97}})
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)


def read_metrics(path: str | Path) -> list[dict]:
    """Read a ``metrics.jsonl`` file: one JSON object a line. A bad line raises ValueError naming it."""
    path = Path(path)
    events = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not JSON ({err.msg})") from None
    return events


def _series(events: Sequence[Mapping], split: str, key: str) -> tuple[list[float], list[float]]:
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


def plot_training_curves(metrics: str | Path | Sequence[Mapping], out_png: str | Path,
                         title: str = "Training curves") -> Path:
    """Plot training and validation loss against the step, and each validation metric on its own axis.

    ``metrics`` is a ``metrics.jsonl`` path or the list of its events (``split`` is "train" or "valid",
    ``step``, ``loss`` and optional ``metrics`` dict).
    """
    events = read_metrics(metrics) if isinstance(metrics, str | Path) else list(metrics)
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
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_attention(weights, source_tokens: Sequence[str], target_tokens: Sequence[str],
                   out_png: str | Path, title: str = "Attention") -> Path:
    """Heatmap of attention weights, rows = target steps, columns = source positions.

    ``weights`` is a (T, S) array or tensor with T = len(target_tokens), S = len(source_tokens).
    """
    import numpy as np

    matrix = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if matrix.shape != (len(target_tokens), len(source_tokens)):
        raise ValueError(f"attention weights have shape {matrix.shape}, expected "
                         f"(len(target_tokens), len(source_tokens)) = ({len(target_tokens)}, {len(source_tokens)})")
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
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def _show(token: str) -> str:
    return "␣" if token == " " else token


def write_report(run_dir: str | Path, title: str, *, figures: Sequence[str | Path] = (),
                 tables: Mapping[str, Mapping[str, object]] | None = None,
                 text: Sequence[str] = ()) -> Path:
    """Write ``run_dir/report.html``: a title, paragraphs, one table per mapping and the figures (by relative path)."""
    run_dir = Path(run_dir)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
             "img{max-width:100%}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(paragraph)}</p>" for paragraph in text]
    for name, table in (tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2><table>")
        for key, value in table.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            parts.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(shown)}</td></tr>")
        parts.append("</table>")
    for figure in figures:
        try:
            rel = Path(figure).resolve().relative_to(run_dir.resolve())
        except ValueError:  # a figure outside the run directory is linked by its absolute path
            rel = Path(figure).resolve()
        parts.append(f"<figure><img src='{html.escape(rel.as_posix())}' alt='{html.escape(rel.stem)}'></figure>")
    out = run_dir / "report.html"
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out
