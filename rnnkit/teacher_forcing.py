"""Teacher forcing schedules (Bengio et al. 2015, "Scheduled Sampling for Sequence Prediction with Recurrent
Neural Networks", section 2.4): the probability epsilon_i of feeding the decoder the gold previous token rather
than its own prediction, as a function of the training step i.

``schedule(step) -> teacher_forcing_ratio`` goes to :meth:`rnnkit.seq2seq.Seq2Seq.forward`; it starts at (or near)
1 and decays, so that the model is weaned off the gold inputs it will not have at inference time.

Example::

    schedule = make_schedule("inverse-sigmoid", k=1000.0)       # 1/2 at step k ln k ~ 6,900
    logits = model(src, src_lengths, tgt_in, teacher_forcing_ratio=schedule(step))
"""

from __future__ import annotations

import math

__all__ = [
    "TeacherForcingSchedule",
    "ConstantSchedule",
    "LinearSchedule",
    "ExponentialSchedule",
    "InverseSigmoidSchedule",
    "SCHEDULE_NAMES",
    "make_schedule",
]


class TeacherForcingSchedule:
    """``schedule(step) -> teacher_forcing_ratio`` epsilon_i for training step i >= 0.

    Use from a training loop: ``logits = model(src, lengths, tgt_in, teacher_forcing_ratio=schedule(step))``.
    """

    def __call__(self, step: int) -> float:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        return float(min(1.0, max(0.0, self.ratio(step))))

    def ratio(self, step: int) -> float:
        raise NotImplementedError


class ConstantSchedule(TeacherForcingSchedule):
    """epsilon_i = value (1.0: always teacher forcing)."""

    def __init__(self, value: float = 1.0) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"value must be in [0, 1], got {value!r}")
        self.value = float(value)

    def ratio(self, step: int) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"ConstantSchedule(value={self.value})"


class LinearSchedule(TeacherForcingSchedule):
    """Linear decay: epsilon_i = max(epsilon, k - c i), epsilon in [0, 1) the floor (Bengio et al. 2015).

    ``start`` is k, ``slope`` is c and ``minimum`` is epsilon.
    """

    def __init__(self, slope: float, start: float = 1.0, minimum: float = 0.0) -> None:
        if slope < 0 or not 0.0 <= minimum <= start <= 1.0:
            raise ValueError(
                f"need slope c >= 0 and 0 <= minimum <= start <= 1, got c={slope}, "
                f"start={start}, minimum={minimum}"
            )
        self.slope, self.start, self.minimum = float(slope), float(start), float(minimum)

    def ratio(self, step: int) -> float:
        return max(self.minimum, self.start - self.slope * step)

    def __repr__(self) -> str:
        return f"LinearSchedule(slope={self.slope}, start={self.start}, minimum={self.minimum})"


class ExponentialSchedule(TeacherForcingSchedule):
    """Exponential decay: epsilon_i = k^i with 0 < k < 1 (Bengio et al. 2015)."""

    def __init__(self, k: float) -> None:
        if not 0.0 < k < 1.0:
            raise ValueError(f"k must be in (0, 1), got {k!r}")
        self.k = float(k)

    def ratio(self, step: int) -> float:
        return self.k**step

    def __repr__(self) -> str:
        return f"ExponentialSchedule(k={self.k})"


class InverseSigmoidSchedule(TeacherForcingSchedule):
    """Inverse sigmoid decay: epsilon_i = k / (k + exp(i / k)) with k >= 1 (Bengio et al. 2015).

    k sets the speed: epsilon falls to 1/2 at i = k ln k.
    """

    def __init__(self, k: float) -> None:
        if not k >= 1.0:
            raise ValueError(f"k must be >= 1, got {k!r}")
        self.k = float(k)

    def ratio(self, step: int) -> float:
        exponent = step / self.k
        return 0.0 if exponent > 700 else self.k / (self.k + math.exp(exponent))  # exp overflows past ~709

    def __repr__(self) -> str:
        return f"InverseSigmoidSchedule(k={self.k})"


_SCHEDULES = {
    "constant": ConstantSchedule,
    "linear": LinearSchedule,
    "exponential": ExponentialSchedule,
    "inverse-sigmoid": InverseSigmoidSchedule,
}

#: Names accepted by :func:`make_schedule`.
SCHEDULE_NAMES: tuple[str, ...] = tuple(_SCHEDULES)


def make_schedule(name: str, **options) -> TeacherForcingSchedule:
    """A teacher forcing schedule by name: "constant", "linear", "exponential" or "inverse-sigmoid"."""
    key = name.replace("_", "-").lower() if isinstance(name, str) else name
    if key not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(_SCHEDULES)}")
    try:
        return _SCHEDULES[key](**options)
    except TypeError as error:  # a missing or unknown keyword
        raise ValueError(f"bad options for the {key} schedule: {error}") from error
