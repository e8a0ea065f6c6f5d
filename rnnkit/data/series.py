"""Series for forecasting: standardisation fitted on the training part, and sliding windows.

Example::

    scaler = StandardScaler.fit(train)                          # mean and std of the training part only
    inputs, targets = make_windows(scaler.transform(train), input_len=24, horizon=6)   # (N, 24), (N, 6)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rnnkit.checks import check_size

__all__ = ["StandardScaler", "make_windows"]


@dataclass
class StandardScaler:
    """Standardisation z = (y - mean) / std of a series, with the statistics of its training part only
    (fitting on all of it would leak the validation and test values into training)."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        self.mean, self.std = float(self.mean), float(self.std)
        if not math.isfinite(self.mean) or not math.isfinite(self.std) or self.std <= 0:
            raise ValueError(f"a scaler needs a finite mean and std > 0, got {self.mean} and {self.std}")

    @classmethod
    def fit(cls, values) -> StandardScaler:
        """Mean and (population) standard deviation of ``values``; a constant series gets std 1."""
        if isinstance(values, Tensor):
            values = values.detach().cpu().numpy()
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError(f"fitting a scaler needs finite values (at least one), got {values.size} values")
        std = float(values.std())
        return cls(float(values.mean()), std if std > 0 else 1.0)

    def transform(self, values):
        """(y - mean) / std, for a tensor or array of any shape."""
        return (values - self.mean) / self.std

    def inverse_transform(self, values):
        """z * std + mean, for a tensor or array of any shape."""
        return values * self.std + self.mean


def make_windows(series, input_len: int, horizon: int, stride: int = 1) -> tuple[Tensor, Tensor]:
    """Slide a window over a 1-D series: inputs (N, input_len), and the ``horizon`` next values (N, horizon).

    Window n covers series[n*stride : n*stride + input_len], its targets the next ``horizon`` values.
    """
    check_size("input_len", input_len)
    check_size("horizon", horizon)
    check_size("stride", stride)
    values = series if isinstance(series, Tensor) else torch.as_tensor(np.asarray(series, dtype=np.float32))
    if values.dim() != 1:
        raise ValueError(f"series must be 1-D (one value per time step), got shape {tuple(values.shape)}")
    span = input_len + horizon
    if values.numel() < span:
        raise ValueError(f"a series of {values.numel()} values is shorter than input_len + horizon = {span}")
    windows = values.unfold(0, span, stride)  # (N, input_len + horizon)
    return windows[:, :input_len].contiguous(), windows[:, input_len:].contiguous()
