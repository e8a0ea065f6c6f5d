"""Recurrent states as trees of tensors: one set of helpers for every module that walks one.

A state is a tensor, or a tuple / named tuple / list / dict of states: ``h`` (B, H) for an RNN or GRU cell,
``(h, c)`` for an LSTM cell, a list of those for a stack of layers, ``{"h": ..., "c": ..., "attention": ...}``
for a decoder. Leaves that are not tensors (None, ints) are kept as they are.

Example::

    state = detach_state(state)                                   # truncated BPTT: keep values, cut the graph
    state = map_state(lambda t: t.index_select(0, rows), state)   # reorder the batch (beams, sorting)
    mixed = map_state(lambda new, old: torch.where(keep, old, new), new_state, old_state)   # zoneout
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch import Tensor

__all__ = ["map_state", "detach_state", "named_state_tensors", "state_tensors", "hidden_of", "select_rows"]


def map_state(fn: Callable[..., Tensor], state: Any, *others: Any) -> Any:
    """Apply ``fn`` to every tensor of ``state`` (and, with ``others``, to the corresponding tensors of states
    with the same structure), keeping the structure: dicts, tuples, named tuples and lists, nested."""
    if isinstance(state, Tensor):
        return fn(state, *others)
    if isinstance(state, Mapping):
        return {key: map_state(fn, value, *(other[key] for other in others)) for key, value in state.items()}
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # named tuple
        return type(state)(*(map_state(fn, *parts) for parts in zip(state, *others, strict=True)))
    if isinstance(state, tuple | list):
        return type(state)(map_state(fn, *parts) for parts in zip(state, *others, strict=True))
    return state


def detach_state(state: Any) -> Any:
    """``state`` with every tensor detached (None stays None).

    Truncated BPTT: between two chunks of a long sequence the values carry on but the graph is cut, so the next
    backward stops at the chunk boundary.
    """
    return map_state(Tensor.detach, state)


def named_state_tensors(state: Any, path: str = "state") -> Iterator[tuple[str, Tensor]]:
    """``(path, tensor)`` for every tensor of a state, in a fixed order; ``path`` names it in error messages
    (``state['h']``, ``state[0]``)."""
    if isinstance(state, Tensor):
        yield path, state
    elif isinstance(state, Mapping):
        for key, value in state.items():
            yield from named_state_tensors(value, f"{path}[{key!r}]")
    elif isinstance(state, tuple | list):
        for index, value in enumerate(state):
            yield from named_state_tensors(value, f"{path}[{index}]")


def state_tensors(state: Any) -> list[Tensor]:
    """Every tensor of a state, in the order of :func:`named_state_tensors`."""
    return [tensor for _, tensor in named_state_tensors(state)]


def hidden_of(state: Tensor | tuple[Tensor, ...]) -> Tensor:
    """The hidden state h of a cell state: the state itself, or the first element of a tuple (LSTM: (h, c))."""
    return state if isinstance(state, Tensor) else state[0]


def select_rows(state: Any, rows: Tensor) -> Any:
    """The state of batch rows ``rows`` (R,), in that order; every tensor has the batch as dim 0."""
    return map_state(lambda tensor: tensor.index_select(0, rows), state)
