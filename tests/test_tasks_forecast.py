"""Tests of rnnkit.tasks.forecast: prepare -> Trainer -> load -> evaluate / forecast, on tiny files."""

import json
import math
import time

import numpy as np
import pytest

from rnnkit.tasks import forecast, resolve_settings, training_settings
from rnnkit.training import Trainer

PERIOD = 8
VALUES = [round(10 + 5 * math.sin(2 * math.pi * t / PERIOD) + 0.1 * t, 4) for t in range(200)]


def _write_csv(path, values, column="level"):
    path.write_text(f"step,{column}\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)), encoding="utf-8")


def _settings(tmp_path, **overrides):
    _write_csv(tmp_path / "series.csv", VALUES)
    given = {"data": str(tmp_path / "series.csv"), "column": "level", "season": PERIOD, "input_len": 12,
             "horizon": 2, "hidden_size": 8, "epochs": 3, "progress": False}
    given.update(overrides)
    return resolve_settings("forecast", given)


def _train(settings, run_dir):
    task, run_config = forecast.prepare(settings, run_dir)
    Trainer(task, run_dir, training_settings(settings), run_config=run_config).train()
    return task


def test_user_csv_holds_out_final_tenths(tmp_path):
    parts = forecast.series_parts(_settings(tmp_path))
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [160, 20, 20]
    assert np.concatenate([parts["train"], parts["valid"], parts["test"]]).tolist() == VALUES


def test_held_out_windows_read_earlier_values():
    parts = {"train": np.arange(10.0), "valid": np.arange(10.0, 13.0), "test": np.arange(13.0, 16.0)}
    inputs, targets = forecast.held_out_windows(parts, "test", input_len=4, horizon=2)
    assert inputs.tolist() == [[9, 10, 11, 12], [10, 11, 12, 13]]
    assert targets.tolist() == [[13, 14], [14, 15]]


def test_round_trip_and_baselines(tmp_path):
    run = tmp_path / "run"
    task = _train(_settings(tmp_path), run)
    runner = forecast.load(run)
    metrics = runner.evaluate(split="test")
    # The baselines by hand on the same windows: targets y_t, y_{t+1}; naive repeats y_{t-1};
    # seasonal-naive repeats the values one period earlier, y_{t-8}, y_{t-7}.
    rows = range(180, 199)
    y = np.array(VALUES)
    targets = np.stack([y[t:t + 2] for t in rows])
    naive = np.stack([[y[t - 1]] * 2 for t in rows])
    seasonal = np.stack([y[t - PERIOD:t - PERIOD + 2] for t in rows])
    assert metrics["windows"] == 19
    assert metrics["naive_rmse"] == pytest.approx(np.sqrt(np.mean((naive - targets) ** 2)))
    assert metrics["seasonal_naive_mae"] == pytest.approx(np.mean(np.abs(seasonal - targets)))
    scale = np.mean(np.abs(np.diff(y[:160])))
    assert metrics["naive_mase"] == pytest.approx(np.mean(np.abs(naive - targets)) / scale)
    # The model's own figures: the forecasts of the saved model, scored by hand.
    inputs = np.stack([y[t - 12:t] for t in rows])
    predictions = runner.model.predict(inputs.astype(np.float32)).double().numpy()
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((predictions - targets) ** 2)), rel=1e-5)
    assert len(runner.forecast()) == 2
    assert runner.forecast(VALUES[:50]) == pytest.approx(runner.model.predict(np.float32(y[38:50])).tolist())
    assert task.evaluate("valid")["windows"] == 20 - 1


def test_scaler_fitted_on_train_only(tmp_path):
    run = tmp_path / "run"
    _train(_settings(tmp_path, max_steps=1), run)
    scaler = json.loads((run / "config.json").read_text())["model"]["scaler"]
    assert scaler["mean"] == pytest.approx(np.mean(VALUES[:160]))
    assert scaler["std"] == pytest.approx(np.std(VALUES[:160]))


def test_explicit_valid_and_test_files(tmp_path):
    settings = _settings(tmp_path)
    _write_csv(tmp_path / "valid.csv", VALUES[100:130])
    _write_csv(tmp_path / "test.csv", VALUES[130:160])
    with pytest.raises(ValueError, match="give both --valid and --test"):
        forecast.series_parts({**settings, "test": str(tmp_path / "test.csv")})
    parts = forecast.series_parts({**settings, "valid": str(tmp_path / "valid.csv"),
                                   "test": str(tmp_path / "test.csv")})
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [200, 30, 30]


@pytest.mark.parametrize("bad, message", [({"input_len": 0}, "input_len must be a positive"),
                                          ({"season": -1}, "season must be a non-negative integer"),
                                          ({"input_len": 170}, "fewer than input_len")])
def test_bad_settings(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        forecast.prepare(_settings(tmp_path, **bad), tmp_path / "run")


def test_too_short_series(tmp_path):
    _write_csv(tmp_path / "short.csv", [1.0, 2.0, 3.0])
    settings = resolve_settings("forecast", {"data": str(tmp_path / "short.csv"), "column": "level"})
    with pytest.raises(ValueError, match="too short"):
        forecast.prepare(settings, tmp_path / "run")


@pytest.mark.slow
def test_sunspots(tmp_path):
    """Acceptance: RMSE below both naive baselines on the final 10% of the series (the catalog's test split)."""
    settings = resolve_settings("forecast", {"data": "sunspots", "time_budget": 60.0, "progress": False})
    start = time.monotonic()
    _train(settings, tmp_path / "run")
    trained = time.monotonic() - start
    metrics = forecast.load(tmp_path / "run").evaluate(split="test")
    print(f"\nsunspots: trained {trained:.0f} s, test {metrics}")
    assert metrics["windows"] == 31  # every value of the final 10% (31 of 309 years) is forecast
    assert metrics["rmse"] < metrics["naive_rmse"]
    assert metrics["rmse"] < metrics["seasonal_naive_rmse"]
