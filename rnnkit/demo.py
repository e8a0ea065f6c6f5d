"""``rnnkit demo``: the main job on the embedded default dataset.

Multilingual dates -> ISO 8601 (``dates``: Babel's CLDR data, 7 locales x medium/long/full formats,
generated offline), learned by a character-level GRU encoder-decoder with Luong general attention in a few
minutes on a laptop CPU. The demo prints held-out exact-match accuracy with beam search and five
translations of unseen dates, and writes ``runs/demo/`` with ``report.html`` (training curves and an
attention heatmap), the model and everything needed to reload it (``rnnkit translate runs/demo``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rnnkit.report import plot_attention, plot_training_curves, write_report
from rnnkit.tasks import resolve_settings, training_settings
from rnnkit.tasks import translate as translate_task
from rnnkit.training import Trainer

SHOWN_EXAMPLES = 5


def run_demo(out: str | Path = "runs/demo", time_budget: float = 240.0, seed: int = 0,
             quick: bool = False) -> dict:
    """Train, evaluate and report; returns the figures it printed (also in ``out/results.json``)."""
    out = Path(out)
    started = time.monotonic()
    # Dates have one right answer: the exact match selects the best model and stops training.
    given = {"data": "dates", "seed": seed, "time_budget": time_budget, "epochs": 50, "patience": 6,
             "select_metric": "exact_match",
             "eval_examples": 1000,
             "eval_every": 100, "eval_on_stop": True}
    if quick:  # a pipeline check, not a model: tiny data and a few seconds of training
        given.update(data="dates:n_train=2000,n_valid=200,n_test=200", hidden_size=32, time_budget=min(
            time_budget, 15.0), eval_every=50, checkpoint_every=50, eval_examples=200)
    settings = resolve_settings("translate", given, source="the demo")
    print(f"rnnkit demo: dates in 7 languages -> ISO 8601, training for at most {settings['time_budget']:.0f} s "
          f"(run directory {out})", flush=True)
    task, run_config = translate_task.prepare(settings, out)
    print(f"  {len(task.train.sources):,} training pairs, {len(task.valid.sources):,} validation pairs; "
          f"model: {task.model.num_parameters():,} parameters", flush=True)
    result = Trainer(task, out, training_settings(settings), run_config=run_config).train(overwrite=True)

    runner = translate_task.load(out)
    test = runner.evaluate(split="test", beam_size=5)
    print(f"\nheld-out test ({int(test['examples'])} unseen dates), beam 5: exact match {test['exact_match']:.3f}, "
          f"chrF {test['chrf']:.1f}", flush=True)

    from rnnkit.data import load_source

    records = list(load_source(settings["data"], "translate", "test"))
    shown = _spread(records, SHOWN_EXAMPLES)
    outputs = runner.translate([r.source for r in shown], beam_size=5, n_best=3)
    print("\nbeam-search translations of unseen dates (3-best, score = log p):")
    examples = []
    for record, options in zip(shown, outputs, strict=True):
        best = options[0]
        mark = "ok" if best["text"] == record.target else f"expected {record.target}"
        alternatives = ", ".join(f"{o['text']} ({o['score']:.2f})" for o in options[1:])
        print(f"  {record.source!r:42} -> {best['text']}  ({best['score']:.3f}; {mark}); then {alternatives}")
        examples.append({"source": record.source, "target": record.target, "n_best": [
            {"text": o["text"], "score": o["score"]} for o in options]})

    curves = plot_training_curves(out / "metrics.jsonl", out / "training_curves.png", title="dates: training")
    first = outputs[0][0]
    heatmap = plot_attention(first["attention"], first["source_tokens"], first["tokens"],
                             out / "attention.png", title=f"attention: {shown[0].source}")
    figures = {"test_exact_match": test["exact_match"], "test_bleu": test["bleu"], "test_chrf": test["chrf"],
               "test_examples": int(test["examples"]), "best_valid_exact_match": result.best_metric,
               "steps": result.step, "stop_reason": result.stop_reason,
               "seconds": round(time.monotonic() - started, 1), "parameters": task.model.num_parameters()}
    (out / "results.json").write_text(json.dumps({**figures, "examples": examples}, indent=2, ensure_ascii=False),
                                      encoding="utf-8")
    report = write_report(out, "rnnkit demo: multilingual dates -> ISO 8601", figures=[curves, heatmap],
                          tables={"held-out test (beam 5)": figures},
                          text=[f"{e['source']} -> {e['n_best'][0]['text']} (expected {e['target']})"
                                for e in examples])
    print(f"\nreport: {report}   model: {out / 'model.safetensors'}   "
          f"try: echo '{shown[0].source}' | rnnkit translate {out}")
    return figures


def _spread(records, n: int):
    """n test pairs spread evenly over the split (its locales and formats come in a shuffled rotation)."""
    return [records[i * len(records) // n] for i in range(min(n, len(records)))]
