"""Run reports: a small self-contained HTML page of a run's figures, tables and sample outputs.

Everything here reads what a run directory already holds (``metrics.jsonl``, figures passed in) and
writes PNG files (drawn by :mod:`rnnkit.plots`) plus ``report.html`` beside them.

Example::

    from rnnkit.report import plot_training_curves, plot_attention, write_report
    curves = plot_training_curves("runs/demo/metrics.jsonl", "runs/demo/curves.png")
    heat = plot_attention(weights, src_tokens, tgt_tokens, "runs/demo/attention.png")
    write_report("runs/demo", "Demo", figures=[curves, heat], tables={"test": {"exact_match": 0.97}})
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from rnnkit import plots
from rnnkit.plots import plot_attention  # also imported from here by the demo


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


def plot_training_curves(metrics: str | Path | Sequence[Mapping], out_png: str | Path,
                         title: str = "Training curves") -> Path:
    """Plot training and validation loss against the step, and each validation metric on its own axis
    (:func:`rnnkit.plots.plot_training_curves`).

    ``metrics`` is a ``metrics.jsonl`` path or the list of its events (``split`` is "train" or "valid",
    ``step``, ``loss`` and optional ``metrics`` dict).
    """
    events = read_metrics(metrics) if isinstance(metrics, str | Path) else list(metrics)
    return plots.plot_training_curves(events, out_png, title=title)


def write_report(run_dir: str | Path, title: str, *, figures: Sequence[str | Path] = (),
                 tables: Mapping[str, Mapping[str, object]] | None = None,
                 text: Sequence[str] = (), preformatted: Mapping[str, str] | None = None) -> Path:
    """Write ``run_dir/report.html``: a title, paragraphs, one table per mapping, preformatted blocks (sample
    outputs) and the figures.

    The page is self-contained: each PNG figure is embedded as a ``data:`` URI (the files stay beside it, and
    each image's ``alt`` text is its file name), so the report can be mailed or opened from anywhere.
    """
    run_dir = Path(run_dir)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "img{max-width:100%}pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(paragraph)}</p>" for paragraph in text]
    for name, table in (tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2><table>")
        for key, value in table.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            parts.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(shown)}</td></tr>")
        parts.append("</table>")
    for name, block in (preformatted or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2><pre>{html.escape(block)}</pre>")
    for figure in figures:
        figure = Path(figure)
        encoded = base64.b64encode(figure.read_bytes()).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{encoded}' alt='{html.escape(figure.name)}'>"
                     "</figure>")
    out = run_dir / "report.html"
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------------------------
# The report of a training run
# ----------------------------------------------------------------------------------------------------------

SAMPLES = 5  # validation examples shown in a run report


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` for a run trained by ``rnnkit train``: its held-out test figures (if
    ``metrics.jsonl`` holds a test event), its configuration, the training summary and last validation
    metrics, the training curves, what happens inside the trained model on one validation example
    (||dL/dh_t|| through time per layer-direction, gate activity, state norms; the attention heatmap of a
    translation run) and sample outputs on validation examples. ``rnnkit train`` calls it at the end of every
    run; it reads only the run directory (and the run's own validation data)."""
    from rnnkit.tasks import load_run

    run_dir = Path(run_dir)
    runner = load_run(run_dir)
    task, config = runner.task, runner.config
    events = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    figures: list[Path] = []
    if any(e.get("split") == "train" for e in events):
        figures.append(plot_training_curves(events, run_dir / "training_curves.png", title=f"{task}: training"))
    tables: dict[str, Mapping[str, object]] = {}
    test = next((e for e in reversed(events) if e.get("event") == "test"), None)
    if test is not None and isinstance(test.get("metrics"), Mapping):
        tables[f"held-out test: {test.get('source')} (the run's weights, as rnnkit eval scores them)"] = \
            test["metrics"]
    stop = next((e for e in reversed(events) if e.get("event") == "stop"), None)
    if stop is not None:
        tables["training"] = {k: stop[k] for k in ("reason", "step", "epoch", "best_metric", "best_step",
                                                   "clip_events", "nonfinite_steps", "wall_time") if k in stop}
    last_eval = next((e for e in reversed(events) if e.get("event") == "eval"), None)
    if last_eval is not None and isinstance(last_eval.get("metrics"), Mapping):
        tables[f"last evaluation ({last_eval.get('split', 'valid')}, step {last_eval.get('step')})"] = \
            last_eval["metrics"]
    parameters = sum(p.numel() for p in runner.model.parameters())
    tables["model"] = {"parameters": parameters, **_plain(config.get("model", {}))}
    tables["settings"] = _plain(config.get("settings", {}))
    samples, inside = _run_samples(task, runner, config, run_dir)
    figures += inside
    return write_report(run_dir, f"rnnkit {task} run: {run_dir.name}", figures=figures, tables=tables,
                        preformatted=samples)


def _plain(mapping: Mapping) -> dict[str, object]:
    """A flat table of a config mapping: nested values as compact JSON."""
    return {str(k): (v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v))
            for k, v in mapping.items()}


def _run_samples(task: str, runner, config: Mapping, run_dir: Path) -> tuple[dict[str, str], list[Path]]:
    """Sample outputs on the run's validation data and the plots of what happens inside the model on the
    first validation example."""
    from rnnkit.data import load_source

    data = config.get("data", {})
    source = data.get("valid") or data.get("train")
    settings = config.get("settings", {})
    samples: dict[str, str] = {}
    figures: list[Path] = []
    probe_input = None
    if task == "forecast":
        figures.append(_plot_forecast(runner, run_dir / "forecast.png"))
        return samples, figures
    records = load_source(source, task, "valid", cache_dir=settings.get("cache_dir"), quiet=True)
    if task == "lm":
        samples["generated at temperature 0.8 (seed 0)"] = runner.generate("", length=300, temperature=0.8, seed=0)
        probe_input = str(records)[:120]
    elif task == "classify":
        shown = list(records[:SAMPLES])
        predicted = runner.predict([r.text for r in shown])
        samples["validation examples: gold -> predicted"] = "\n".join(
            f"{r.label} -> {p}: {r.text}" for r, p in zip(shown, predicted, strict=True))
        probe_input = shown[0].text if shown else None
    elif task == "tag":
        shown = list(records[:SAMPLES])
        predicted = runner.predict([" ".join(r.tokens) for r in shown])
        samples["validation sentences: token/gold/predicted"] = "\n".join(
            " ".join(f"{w}/{g}/{p}" for w, g, p in zip(r.tokens, r.tags, tags, strict=True))
            for r, tags in zip(shown, predicted, strict=True))
        probe_input = " ".join(shown[0].tokens) if shown else None
    elif task == "translate":
        shown = list(records[:SAMPLES])
        beam = int(settings.get("beam_size", 5))  # the run's own beam, as `rnnkit translate` uses it
        outputs = runner.translate([r.source for r in shown], n_best=min(3, beam))
        samples[f"validation sources: beam {beam}, {min(3, beam)}-best (score = log p)"] = "\n".join(
            f"{r.source}  ->  " + " | ".join(f"{o['text']} ({o['score']:.2f})" for o in options)
            + ("" if options[0]["text"] == r.target else f"   [expected {r.target}]")
            for r, options in zip(shown, outputs, strict=True))
        if shown:
            best = outputs[0][0]
            figures.append(plot_attention(best["attention"], best["source_tokens"], best["tokens"],
                                          run_dir / "attention.png", title=f"attention: {shown[0].source}"))
            probe_input = shown[0].source
    if probe_input:
        figures += _plot_inside(task, runner, probe_input, run_dir)
    return samples, figures


def _plot_inside(task: str, runner, text: str, run_dir: Path) -> list[Path]:
    """||dL/dh_t||, gates and state norms of the trained model on one input (see :mod:`rnnkit.probe`)."""
    from rnnkit.diagnostics import plot_gates, plot_gradient_norms, plot_state_norms
    from rnnkit.probe import probe

    result, _ = probe(task, runner, text)
    shown = text if len(text) <= 40 else text[:37] + "..."
    figures = []
    curves = {trace.name: trace.grad_norm for trace in result.layers if trace.grad_norm is not None}
    if curves:
        figures.append(plot_gradient_norms(curves, run_dir / "gradient_through_time.png",
                                           title=f"||dL/dh_t|| on one validation input: {shown}"))
    gated = [trace for trace in result.layers if trace.gates]
    if gated:
        figures.append(plot_gates(gated[0], run_dir / "gates.png"))
    if result.layers:
        figures.append(plot_state_norms(result.layers, run_dir / "state_norms.png"))
    return figures


def _plot_forecast(runner, out_png: Path) -> Path:
    """The test split with the model's rolling forecasts: from each test step i = 0, h, 2h, ... the next h values
    forecast from the actual series before i, drawn over the actual values and the end of the history."""
    import numpy as np

    parts = runner.parts
    history = np.concatenate([parts["train"], parts["valid"]])
    test = parts["test"]
    horizon = runner.model.config.horizon
    steps, predicted = [], []
    for start in range(0, len(test), horizon):
        forecast = runner.forecast(np.concatenate([history, test[:start]]))[: len(test) - start]
        steps += range(len(history) + start, len(history) + start + len(forecast))
        predicted += forecast
    return plots.plot_forecast(history, test, steps, predicted, horizon, out_png)
