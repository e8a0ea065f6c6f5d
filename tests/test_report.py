import json

import numpy as np
import pytest

from rnnkit.report import plot_attention, plot_training_curves, read_metrics, write_report


def test_curves_and_report(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    events = [{"split": "train", "step": s, "loss": 2.0 / s} for s in range(1, 20)]
    events += [{"split": "valid", "step": s, "loss": 2.5 / s, "metrics": {"accuracy": 1 - 1 / s}} for s in (5, 10, 15)]
    metrics.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    assert read_metrics(metrics) == events
    png = plot_training_curves(metrics, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    heat = plot_attention(np.eye(3), list("abc"), list("xyz"), tmp_path / "att.png")
    page = write_report(tmp_path, "Run", figures=[png, heat], tables={"test": {"accuracy": 0.5}})
    text = page.read_text()
    assert "curves.png" in text and "att.png" in text and "0.5" in text


def test_bad_metrics_line_named(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(metrics)


def test_attention_shape_checked(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        plot_attention(np.ones((2, 3)), list("ab"), list("xyz"), tmp_path / "a.png")
