"""Argument checks shared by the public entry points: one definition of each, one wording of each message.

Each check returns the value it accepted (converted where the name says so) or raises ``ValueError`` naming the
argument, what was expected and what was given. Validate once, at the public boundary (a constructor, a
``forward`` that users call, a command); functions behind it trust their callers.

Example::

    self.hidden_size = check_size("hidden_size", hidden_size)          # a positive int
    self.dropout = check_probability("dropout", dropout)               # a float in [0, 1)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_size", "check_int", "check_probability", "check_bool", "check_choice", "check_lengths"]


def check_size(name: str, value: object, *, allow_zero: bool = False) -> int:
    """``value`` if it is a positive (or, with ``allow_zero``, non-negative) int, else ValueError."""
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")
    return value


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_probability(name: str, value: object) -> float:
    """``value`` as a float if it is a number in [0, 1), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is True or False (not 0/1 or a string), else ValueError."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices``, else ValueError listing them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(str, choices))}")
    return value


def check_lengths(lengths: object, batch_size: int, max_length: int, device: torch.device | str) -> Tensor:
    """Per-sequence lengths as an int64 tensor (B,) on ``device``.

    Raises ValueError unless ``lengths`` is a 1-D tensor or sequence of ``batch_size`` integers, each in
    [1, max_length].
    """
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"lengths must be a 1-D tensor or list of ints, got {lengths!r}") from error
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch_size:
        raise ValueError(
            f"lengths must have shape ({batch_size},), one length per sequence, got {tuple(lengths.shape)}"
        )
    lengths = lengths.to(device=device, dtype=torch.int64)
    if batch_size:
        shortest, longest = int(lengths.min()), int(lengths.max())
        if shortest < 1:
            raise ValueError(f"lengths must be at least 1, got a length of {shortest}")
        if longest > max_length:
            raise ValueError(f"lengths must be at most the number of time steps T={max_length}, got {longest}")
    return lengths
