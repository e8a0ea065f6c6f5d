import json

import numpy as np
import pytest

from rnnkit.report import plot_attention, plot_training_curves, read_metrics, write_report, write_run_report


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
    assert text.count("data:image/png;base64,") == 2  # self-contained: the images are inline


def test_curve_panels_draw_each_panel_with_its_reference_lines(tmp_path):
    from matplotlib import image

    from rnnkit.plots import plot_curve_panels

    panels = [{"curves": {"loss": ([1, 2, 3], [1.0, 0.5, float("nan")])}, "title": "loss", "ylabel": "nats",
               "log_y": True},
              {"curves": {"WER": ([1, 2], [40.0, 30.0])}, "title": "WER", "ylabel": "%", "lines": {"goal": 25.0}}]
    wide = plot_curve_panels(panels, tmp_path / "two.png", title="run")
    one = plot_curve_panels(panels[:1], tmp_path / "one.png", title="run")
    assert image.imread(wide).shape[1] == 2 * image.imread(one).shape[1]  # one panel's width each
    with pytest.raises(TypeError):
        plot_curve_panels([{"curves": {}, "title": "t", "ylabel": "y", "colour": "red"}], tmp_path / "x.png", title="")


def test_bad_metrics_line_named(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(metrics)


def test_attention_shape_checked(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        plot_attention(np.ones((2, 3)), list("ab"), list("xyz"), tmp_path / "a.png")


def _report_of(run_dir) -> str:
    text = write_run_report(run_dir).read_text(encoding="utf-8")
    for image in run_dir.glob("*.png"):
        assert f"alt='{image.name}'" in text  # every plot is in the page ...
    assert "src='training_curves.png'" not in text and text.count("src='data:image/png;base64,") >= 1  # ... inline
    return text


@pytest.mark.parametrize("task", ["lm", "classify", "tag", "translate"])
def test_run_report_shows_curves_inside_the_model_and_samples(tmp_path, task):
    from tests import test_tasks_classify, test_tasks_lm, test_tasks_tag

    run = tmp_path / "run"
    if task == "translate":
        from tests.test_server_api import make_translate_run

        make_translate_run(run)
    else:
        module = {"lm": test_tasks_lm, "classify": test_tasks_classify, "tag": test_tasks_tag}[task]
        module._train(module._settings(tmp_path, max_steps=4, eval_every=2, log_every=1), run)
    text = _report_of(run)
    figures = {p.name for p in run.glob("*.png")}
    assert {"training_curves.png", "gradient_through_time.png", "gates.png", "state_norms.png"} <= figures
    assert ("attention.png" in figures) == (task == "translate")
    assert "<h2>settings</h2>" in text and "<h2>model</h2>" in text and "last evaluation" in text
    heading = {"lm": "generated at temperature 0.8", "classify": "gold -&gt; predicted",
               "tag": "token/gold/predicted", "translate": "3-best"}[task]
    assert heading in text


def test_run_report_of_a_forecast_plots_the_forecast(tmp_path):
    from tests import test_tasks_forecast

    run = tmp_path / "run"
    test_tasks_forecast._train(test_tasks_forecast._settings(tmp_path, epochs=2, log_every=1), run)
    text = _report_of(run)
    assert {"training_curves.png", "forecast.png"} <= {p.name for p in run.glob("*.png")}
    assert "<h2>settings</h2>" in text


def test_run_report_needs_a_run_directory(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        write_run_report(tmp_path)
