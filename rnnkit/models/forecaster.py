r"""The forecaster: a window of past values of a series -> recurrent encoder -> the next ``horizon`` values at
once, in units standardised by a :class:`~rnnkit.data.series.StandardScaler` fitted on the training part.

Example::

    model = Forecaster(ForecasterConfig(input_len=24, horizon=6, hidden_size=32))
    model.fit_scaler(train_series)
    forecast = model.predict(recent_values)        # (B, 6) in the series' own units
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.checks import check_size
from rnnkit.data.series import StandardScaler
from rnnkit.models.base import RecurrentConfig, TaskModel, evaluating
from rnnkit.models.classifier import SequenceEncoder, SequenceEncoderConfig

__all__ = ["ForecasterConfig", "Forecaster"]


@dataclass(kw_only=True)
class ForecasterConfig(RecurrentConfig):
    """:class:`Forecaster` settings: ``input_len`` past values in, ``horizon`` values out, the scaler."""

    input_len: int
    horizon: int
    scaler: StandardScaler = field(default_factory=StandardScaler)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_size("input_len", self.input_len)
        check_size("horizon", self.horizon)
        if isinstance(self.scaler, dict):  # read back from JSON
            self.scaler = StandardScaler(**self.scaler)
        if not isinstance(self.scaler, StandardScaler):
            raise ValueError(f"scaler must be a StandardScaler or a dict (mean, std), got {self.scaler!r}")


class Forecaster(TaskModel):
    """Direct multi-step forecasting of a univariate series (Ben Taieb et al. 2012, the "MIMO" strategy):
    the last ``input_len`` values z_{t-n+1..t} -> recurrent encoder -> linear -> z_{t+1..t+horizon} at once.

    The network works in standardised units z = (y - mean) / std; the :class:`StandardScaler` lives in the
    config (so it is saved with the model) and is fitted on the training part only (:meth:`fit_scaler`).
    :meth:`forward` maps standardised windows to standardised forecasts (for training);
    :meth:`predict` maps raw windows to raw forecasts.

    Example::

        model = Forecaster(ForecasterConfig(input_len=24, horizon=6, hidden_size=32))
        model.fit_scaler(train_series)
        inputs, targets = make_windows(model.config.scaler.transform(train_series), 24, 6)
        loss = F.mse_loss(model(inputs), targets)
        forecast = model.predict(recent_values)        # (B, 6) in the series' own units
    """

    task = "forecast"
    config_class = ForecasterConfig

    def __init__(self, config: ForecasterConfig | dict[str, Any]) -> None:
        super().__init__(config)
        config = self.config
        encoder_config = SequenceEncoderConfig(
            cell=config.cell, hidden_size=config.hidden_size, num_layers=config.num_layers,
            dropout=config.dropout, layer_norm=config.layer_norm, input_size=1, bidirectional=False,
            pooling="last",
        )  # fmt: skip
        self.encoder = SequenceEncoder(encoder_config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.horizon)

    @property
    def scaler(self) -> StandardScaler:
        return self.config.scaler

    def fit_scaler(self, train_series) -> StandardScaler:
        """Fit the scaler on the training part of the series (never on validation or test values)."""
        self.config.scaler = StandardScaler.fit(train_series)
        return self.config.scaler

    def _check_windows(self, windows: Tensor) -> Tensor:
        if not isinstance(windows, Tensor):
            windows = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        if windows.dim() == 3 and windows.size(2) == 1:
            windows = windows.squeeze(2)
        if windows.dim() != 2 or windows.size(1) != self.config.input_len:
            raise ValueError(
                f"windows must have shape (B, input_len={self.config.input_len}), got {tuple(windows.shape)}"
            )
        return windows.to(self.head.weight.dtype)

    def forward(self, windows: Tensor) -> Tensor:
        """Standardised windows (B, input_len) or (B, input_len, 1) -> standardised forecasts (B, horizon)."""
        windows = self._check_windows(windows)
        features, _ = self.encoder(windows.unsqueeze(2))  # (B, H): the state after the last value
        return self.head(self.dropout(features))  # (B, horizon)

    @torch.no_grad()
    def predict(self, windows) -> Tensor:
        """Raw windows (B, input_len), or one (input_len,), -> raw forecasts (B, horizon), or (horizon,)."""
        if not isinstance(windows, Tensor):
            windows = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        single = windows.dim() == 1
        windows = self._check_windows(windows.unsqueeze(0) if single else windows)  # (B, input_len)
        with evaluating(self):
            forecast = self.scaler.inverse_transform(self(self.scaler.transform(windows)))  # (B, horizon)
        return forecast.squeeze(0) if single else forecast
