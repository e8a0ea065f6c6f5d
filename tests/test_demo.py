"""`rnnkit demo` end to end: the README's first command must deliver what it promises."""

import json

import pytest

from rnnkit.demo import run_demo


def test_quick_demo_writes_a_complete_run(tmp_path):
    figures = run_demo(tmp_path / "demo", quick=True)
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "report.html", "training_curves.png",
                 "attention.png", "results.json", "source_vocab.json", "target_vocab.json"):
        assert (tmp_path / "demo" / name).is_file(), name
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["test_exact_match"] == figures["test_exact_match"]
    assert len(saved["examples"]) == 5 and all(len(e["n_best"]) == 3 for e in saved["examples"])


@pytest.mark.slow
def test_demo_reaches_095_exact_match_within_budget(tmp_path):
    figures = run_demo(tmp_path / "demo", time_budget=240.0)
    assert figures["test_examples"] == 1000
    assert figures["test_exact_match"] >= 0.95, figures
    assert figures["seconds"] <= 300, figures
