"""Tests for rnnkit.teacher_forcing: the scheduled-sampling schedules (Bengio et al. 2015, section 2.4)."""

import math

import pytest

import rnnkit.seq2seq
import rnnkit.teacher_forcing
from rnnkit.teacher_forcing import (
    SCHEDULE_NAMES,
    ExponentialSchedule,
    InverseSigmoidSchedule,
    LinearSchedule,
    make_schedule,
)


def test_schedules_values_by_hand():
    linear = LinearSchedule(slope=0.1, start=1.0, minimum=0.2)  # max(0.2, 1 - 0.1 i)
    assert [linear(i) for i in (0, 3, 5, 8, 10, 100)] == pytest.approx([1.0, 0.7, 0.5, 0.2, 0.2, 0.2])
    exponential = ExponentialSchedule(k=0.9)  # 0.9^i
    assert [exponential(i) for i in (0, 1, 2, 10)] == pytest.approx([1.0, 0.9, 0.81, 0.3486784401])
    inverse_sigmoid = InverseSigmoidSchedule(k=10)  # 10 / (10 + exp(i / 10))
    assert inverse_sigmoid(0) == pytest.approx(10 / 11)
    assert inverse_sigmoid(10) == pytest.approx(10 / (10 + math.e))
    assert inverse_sigmoid(23) == pytest.approx(0.5, abs=0.001)  # 1/2 at i = k ln k = 23.03
    assert inverse_sigmoid(100_000) == 0.0
    assert make_schedule("inverse_sigmoid", k=10)(10) == inverse_sigmoid(10)
    assert make_schedule("constant", value=0.25)(7) == 0.25


def test_schedules_reject_bad_values():
    for build in (
        lambda: ExponentialSchedule(1.5),
        lambda: InverseSigmoidSchedule(0.5),
        lambda: LinearSchedule(-1.0),
        lambda: make_schedule("cosine"),
        lambda: make_schedule("linear", k=3),
    ):
        with pytest.raises(ValueError):
            build()
    with pytest.raises(ValueError, match="step"):
        LinearSchedule(0.1)(-1)


def test_schedules_are_still_importable_from_seq2seq():
    for name in ("TeacherForcingSchedule", "ConstantSchedule", "LinearSchedule", "ExponentialSchedule",
                 "InverseSigmoidSchedule", "make_schedule"):
        assert getattr(rnnkit.seq2seq, name) is getattr(rnnkit.teacher_forcing, name)
        assert name in rnnkit.seq2seq.__all__
    assert SCHEDULE_NAMES == ("constant", "linear", "exponential", "inverse-sigmoid")
