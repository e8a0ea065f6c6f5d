"""Forecasting a univariate series: a recurrent :class:`rnnkit.models.Forecaster` on sliding windows.

The last ``input_len`` values y_{t-n+1..t} predict the next ``horizon`` values y_{t+1..t+horizon} at once.
Values are standardised with the mean and standard deviation of the training part only (fitting them on the
whole series would leak the held-out values into training).

The series is cut in time order: train, then validation, then test. A catalog series (``sunspots``,
``co2``, ...) brings its own splits; a user's CSV (``--column NAME``) keeps its final 10% as test and the
10% before it as validation, unless ``--valid`` / ``--test`` files are given. A window scored on a held-out
part reads its inputs from whatever precedes its targets (training values included) but has every target
in that part.

Metrics on the held-out part: MAE, RMSE and MASE (Hyndman & Koehler 2006, scaled by the in-sample naive
error of the training part), each next to the same figures of two baselines on the same windows:
naive (y_hat_{t+h} = y_t) and seasonal-naive (y_hat_{t+h} = y_{t+h-m ceil(h/m)}, m = ``season``).

Example::

    rnnkit train forecast --data sunspots --out runs/sunspots
    rnnkit eval runs/sunspots
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.checks import check_size
from rnnkit.data import load_source
from rnnkit.metrics import mae, mase, naive_forecast, rmse, seasonal_naive_forecast
from rnnkit.models import Forecaster, ForecasterConfig, StandardScaler, make_windows
from rnnkit.tasks import SPLITS, TaskRunner, common_defaults, is_catalog_source, jsonable_settings

# The seasonal period of each catalog series (yearly sunspots: the ~11-year solar cycle; weekly CO2: a year;
# monthly El Nino: a year); used when --season is 0.
CATALOG_SEASONS = {"sunspots": 11, "co2": 52, "elnino": 12, "nile": 1}
HOLD_OUT = 0.1  # fraction of a user's series kept for validation, and again for test

DEFAULTS: dict[str, Any] = common_defaults(
    data="sunspots",
    column="",
    season=0,
    input_len=24,
    horizon=1,
    cell="gru",
    hidden_size=32,
    num_layers=1,
    dropout=0.0,
    batch_size=16,
    epochs=1000,  # an epoch of a yearly series is a few steps: the cap sits higher
    lr=3e-3,
    patience=15,
)

HELP: dict[str, str] = {
    "column": "the CSV column holding the series (default: the reader's choice, the only numeric column)",
    "season": "seasonal period m of the seasonal-naive baseline (0 = the catalog series' own, else 1)",
    "input_len": "past values the model reads",
    "horizon": "future values predicted at once",
    "cell": "recurrent cell: lstm | gru | rnn",
    "hidden_size": "state size H",
    "num_layers": "stacked recurrent layers",
    "dropout": "dropout between layers and before the output layer",
    "batch_size": "windows per batch",
}


def _check_settings(settings: dict[str, Any]) -> None:
    for key in ("input_len", "horizon", "batch_size"):
        check_size(key, settings[key])
    check_size("season", settings["season"], allow_zero=True)  # 0 = the dataset's own period


def _season(settings: dict[str, Any]) -> int:
    season = int(settings["season"])
    return season or CATALOG_SEASONS.get(str(settings["data"]), 1)


def _values(source: str, split: str, settings: dict[str, Any]) -> np.ndarray:
    options = {"column": settings["column"]} if settings.get("column") else {}
    series = load_source(source, "forecast", split, cache_dir=settings.get("cache_dir"), quiet=True, **options)
    values = np.asarray(series.values, dtype=np.float64).reshape(-1)
    if not np.isfinite(values).all():
        raise ValueError(f"{source} ({split}) holds missing or non-finite values; fill or drop them first")
    return values


def series_parts(settings: dict[str, Any]) -> dict[str, np.ndarray]:
    """The train / valid / test parts of the series, in time order."""
    data = str(settings["data"])
    explicit = bool(settings.get("valid") or settings.get("test"))
    if is_catalog_source(data) and not explicit:
        return {split: _values(data, split, settings) for split in ("train", "valid", "test")}
    if explicit:
        if not (settings.get("valid") and settings.get("test")):
            raise ValueError("give both --valid and --test files, or neither (then the final 10% of the series "
                             "is the test part and the 10% before it the validation part)")
        return {"train": _values(data, "train", settings), "valid": _values(settings["valid"], "valid", settings),
                "test": _values(settings["test"], "test", settings)}
    values = _values(data, "train", settings)
    held_out = max(1, int(round(HOLD_OUT * len(values))))
    if len(values) - 2 * held_out < 2:
        raise ValueError(f"a series of {len(values)} values is too short to hold out 10% twice")
    cut = len(values) - 2 * held_out
    return {"train": values[:cut], "valid": values[cut:cut + held_out], "test": values[cut + held_out:]}


def held_out_windows(parts: dict[str, np.ndarray], split: str, input_len: int,
                     horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows whose ``horizon`` targets all lie in ``split``: inputs (N, input_len) read from everything
    before the targets, targets (N, horizon)."""
    order = ["train", "valid", "test"]
    before = np.concatenate([parts[name] for name in order[: order.index(split)]])
    values = np.concatenate([before, parts[split]])
    start = max(len(before), input_len)
    rows = range(start, len(values) - horizon + 1)
    if len(rows) == 0:
        raise ValueError(f"the {split} part ({len(parts[split])} values) has no window of input_len={input_len} "
                         f"and horizon={horizon}")
    inputs = np.stack([values[t - input_len:t] for t in rows])  # (N, input_len)
    targets = np.stack([values[t:t + horizon] for t in rows])  # (N, horizon)
    return inputs, targets


def forecast_scores(model: Forecaster, inputs: np.ndarray, targets: np.ndarray, history: np.ndarray,
                    season: int) -> dict[str, float]:
    """The model's MAE / RMSE / MASE on the windows, next to the naive and seasonal-naive baselines."""
    predictions = model.predict(torch.as_tensor(inputs, dtype=torch.float32)).double().numpy()  # (N, horizon)
    horizon = targets.shape[1]
    metrics: dict[str, float] = {}
    candidates = {"": predictions, "naive_": naive_forecast(inputs, horizon)}
    if season <= inputs.shape[1]:
        candidates["seasonal_naive_"] = seasonal_naive_forecast(inputs, horizon, season)
    for prefix, forecast in candidates.items():
        metrics[f"{prefix}mae"] = mae(forecast, targets)
        metrics[f"{prefix}rmse"] = rmse(forecast, targets)
        metrics[f"{prefix}mase"] = mase(forecast, targets, history)
    metrics["loss"] = float(np.mean((model.scaler.transform(predictions) - model.scaler.transform(targets)) ** 2))
    metrics["windows"] = float(len(targets))
    metrics["season"] = float(season)
    return metrics


class ForecastTask:
    """The :class:`rnnkit.training.TrainTask` of forecasting (mean squared error in standardised units)."""

    primary_metric = "rmse"
    higher_is_better = False

    def __init__(self, model: Forecaster, parts: dict[str, np.ndarray], batch_size: int, season: int) -> None:
        self.model, self.parts, self.batch_size, self.season = model, parts, batch_size, season
        config = model.config
        scaled = torch.as_tensor(model.scaler.transform(parts["train"]), dtype=torch.float32)  # (N,)
        self.inputs, self.targets = make_windows(scaled, config.input_len, config.horizon)  # (W, n), (W, h)
        self.valid = held_out_windows(parts, "valid", config.input_len, config.horizon)
        baselines = ("", "naive_") + (("seasonal_naive_",) if season <= config.input_len else ())
        self.metrics = tuple(f"{p}{m}" for p in baselines for m in ("mae", "rmse", "mase")) + ("loss",)

    def train_batches(self, epoch: int, rng: random.Random) -> list[list[int]]:
        order = list(range(len(self.inputs)))
        rng.shuffle(order)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def loss(self, batch: list[int], carry: Any) -> tuple[Tensor, int, None]:
        predictions = self.model(self.inputs[batch])  # (B, horizon)
        return F.mse_loss(predictions, self.targets[batch]), len(batch), None

    def evaluate(self, split: str) -> dict[str, float]:
        return forecast_scores(self.model, *self.valid, self.parts["train"], self.season)


def prepare(settings: dict[str, Any], run_dir: str | Path) -> tuple[ForecastTask, dict[str, Any]]:
    """Read and split the series, fit the scaler on the training part, build the model."""
    _check_settings(settings)
    run_dir = Path(run_dir)
    parts = series_parts(settings)
    input_len, horizon = int(settings["input_len"]), int(settings["horizon"])
    if len(parts["train"]) < input_len + horizon:
        raise ValueError(f"the training part has {len(parts['train'])} values, fewer than input_len + horizon = "
                         f"{input_len + horizon}; lower --input-len")
    torch.manual_seed(int(settings["seed"]))
    config = ForecasterConfig(
        input_len=input_len, horizon=horizon, cell=settings["cell"], hidden_size=int(settings["hidden_size"]),
        num_layers=int(settings["num_layers"]), dropout=float(settings["dropout"]),
        scaler=StandardScaler.fit(parts["train"]),
    )
    model = Forecaster(config)
    season = _season(settings)
    task = ForecastTask(model, parts, int(settings["batch_size"]), season)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The held-out parts are saved as data (JSON numbers) so evaluation reads exactly the same split.
    data = str(settings["data"])
    sources = {"train": data, "valid": str(settings.get("valid") or data), "test": str(settings.get("test") or data)}
    run_config = {"task": "forecast", "model": config.to_dict(), "settings": jsonable_settings(settings),
                  "data": {**sources, "season": season,
                           "parts": {name: values.tolist() for name, values in parts.items()}}}
    return task, run_config


class ForecastRunner(TaskRunner):
    """A trained forecaster loaded from its run directory (the series' parts are in its config.json)."""

    task, model_kind = "forecast", "a forecaster"

    def build_model(self, model_config: Any) -> Forecaster:
        return Forecaster(model_config)

    def load_files(self) -> None:
        try:
            self.parts = {k: np.asarray(v, dtype=np.float64) for k, v in self.config["data"]["parts"].items()}
            self.season = int(self.config["data"]["season"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{self.run_dir / 'config.json'}: no series parts and season ({err})") from None

    def forecast(self, history: Any = None) -> list[float]:
        """The next ``horizon`` values after ``history`` (default: the whole series of the run)."""
        if history is None:
            history = np.concatenate([self.parts[k] for k in ("train", "valid", "test")])
        values = np.asarray(history, dtype=np.float64).reshape(-1)
        n = self.model.config.input_len
        if len(values) < n:
            raise ValueError(f"forecasting needs at least input_len={n} past values, got {len(values)}")
        return self.model.predict(torch.as_tensor(values[-n:], dtype=torch.float32)).double().tolist()

    def evaluation_source(self, source: str | None = None, split: str | None = None) -> tuple[str, str]:
        """What :meth:`evaluate` reads: ``(series, split)``; a series is always cut into its parts."""
        split = split or "test"
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return source or str(self.config["data"]["train"]), split

    def evaluate(self, source: str | None = None, split: str | None = None) -> dict[str, float]:
        """Scores on ``split`` (default: test) of the run's series, or of another series ``source`` (its own
        final 10% as test and the 10% before it as validation, or a catalog series' own splits)."""
        _, split = self.evaluation_source(source, split)
        parts = self.parts
        if source is not None:
            parts = series_parts({**self.settings, "data": source, "valid": None, "test": None})
        n, h = self.model.config.input_len, self.model.config.horizon
        if split == "train":
            inputs, targets = (w.double().numpy() for w in make_windows(torch.as_tensor(parts["train"]), n, h))
        else:
            inputs, targets = held_out_windows(parts, split, n, h)
        return forecast_scores(self.model, inputs, targets, parts["train"], self.season)


load = ForecastRunner  # the task module's contract: load(run_dir) -> its runner
