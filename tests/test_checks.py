"""rnnkit.checks: each check accepts what its name promises and names the argument when it refuses."""

import pytest
import torch

from rnnkit.checks import check_bool, check_choice, check_int, check_lengths, check_probability, check_size


def test_check_size():
    assert check_size("hidden_size", 3) == 3
    assert check_size("proj_size", 0, allow_zero=True) == 0
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
            check_size("hidden_size", bad)
    with pytest.raises(ValueError, match="non-negative"):
        check_size("proj_size", -1, allow_zero=True)


def test_check_int():
    assert check_int("epochs", 0, minimum=0) == 0
    for bad in (-1, 1.5, False):
        with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
            check_int("epochs", bad, minimum=0)


def test_check_probability():
    assert check_probability("dropout", 0) == 0.0 and isinstance(check_probability("dropout", 0), float)
    assert check_probability("dropout", 0.5) == 0.5
    for bad in (1.0, -0.1, True, "0.1", float("nan")):
        with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\)"):
            check_probability("dropout", bad)


def test_check_bool_and_choice():
    assert check_bool("bias", False) is False
    for bad in (0, 1, "true", None):
        with pytest.raises(ValueError, match="bias must be True or False"):
            check_bool("bias", bad)
    assert check_choice("cell", "gru", ("lstm", "gru")) == "gru"
    with pytest.raises(ValueError, match="unknown cell 'tree'; expected one of lstm, gru"):
        check_choice("cell", "tree", ("lstm", "gru"))


def test_check_lengths():
    lengths = check_lengths([3, 1], 2, 3, "cpu")
    assert lengths.dtype == torch.int64 and lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="hold integers"):
        check_lengths(torch.tensor([1.0, 2.0]), 2, 3, "cpu")
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        check_lengths([1, 2, 3], 2, 3, "cpu")
    with pytest.raises(ValueError, match="at least 1"):
        check_lengths([0, 2], 2, 3, "cpu")
    with pytest.raises(ValueError, match="at most the number of time steps T=3"):
        check_lengths([4, 2], 2, 3, "cpu")
    with pytest.raises(ValueError, match="1-D tensor or list of ints"):
        check_lengths(object(), 2, 3, "cpu")
