"""The lengths of a padded batch, and everything the layers derive from them, each computed once.

A layer's ``forward`` builds one :class:`Lengths` from what the user passed (:meth:`Lengths.of` validates it,
once, at that public boundary) and hands it down: to the reversal of each sequence's valid prefix for a backward
direction, to the masks that freeze a finished sequence's state and zero its outputs, and to the fast path,
which runs a batch sorted longest first so that the sequences still running at step t are rows [0, n_t) (as a
PackedSequence's ``batch_sizes``). Each derived value is computed on first use and kept, so the (CPU-syncing)
list of n_t is made once per call, not once per layer-direction.
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

from rnnkit.checks import check_lengths

__all__ = ["Lengths"]


class Lengths:
    """The valid length of every sequence of a (T, B, ...) batch.

    Attributes:
        lengths: (B,) int64, each in [1, T], on the batch's device.
        steps: T, the padded length.
    """

    def __init__(self, lengths: Tensor, steps: int) -> None:
        self.lengths = lengths
        self.steps = steps

    @classmethod
    def of(cls, lengths: object, batch_size: int, steps: int, device: torch.device | str) -> Lengths | None:
        """Validate user-given lengths (a 1-D tensor or sequence of ``batch_size`` ints in [1, ``steps``]; see
        :func:`rnnkit.checks.check_lengths`) and wrap them; None if nothing is padded (every length is T)."""
        checked = check_lengths(lengths, batch_size, steps, device)
        if bool((checked == steps).all()):
            return None
        return cls(checked, steps)

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @cached_property
    def order(self) -> Tensor | None:
        """(B,) the batch sorted by length, longest first (stable); None if it already is."""
        order = torch.argsort(self.lengths, descending=True, stable=True)
        return None if torch.equal(order, torch.arange(self.batch_size, device=order.device)) else order

    @cached_property
    def inverse(self) -> Tensor | None:
        """(B,) the permutation that undoes :attr:`order` (None with it)."""
        if self.order is None:
            return None
        inverse = torch.empty_like(self.order)
        inverse[self.order] = torch.arange(self.batch_size, device=self.order.device)
        return inverse

    @cached_property
    def batch_sizes(self) -> list[int]:
        """n_t for every step t that any sequence reaches: how many sequences are longer than t, as torch's
        PackedSequence counts them (rows [0, n_t) of the sorted batch)."""
        steps = torch.arange(self.steps, device=self.lengths.device)
        running = (self.lengths.unsqueeze(0) > steps.unsqueeze(1)).sum(1)  # (T,)
        return [n for n in running.tolist() if n > 0]

    @cached_property
    def valid(self) -> Tensor:
        """(T, B, 1) bool: True where step t is within sequence b."""
        steps = torch.arange(self.steps, device=self.lengths.device).unsqueeze(1)  # (T, 1)
        return (steps < self.lengths).unsqueeze(-1)

    @cached_property
    def reverse_index(self) -> Tensor:
        """(T, B, 1) time index that reverses each sequence's valid prefix: t -> L_b - 1 - t for t < L_b, t
        after (padding stays at the end, so a backward direction starts at each sequence's own last element)."""
        steps = torch.arange(self.steps, device=self.lengths.device).unsqueeze(1)  # (T, 1)
        return torch.where(steps < self.lengths, self.lengths - 1 - steps, steps).unsqueeze(-1)

    def sorted(self) -> Lengths:
        """These lengths in :attr:`order` (longest first); the same object if already sorted."""
        if self.order is None:
            return self
        ordered = Lengths(self.lengths[self.order], self.steps)
        ordered.__dict__["order"] = None  # known: no second argsort
        if "batch_sizes" in self.__dict__:
            ordered.__dict__["batch_sizes"] = self.batch_sizes  # the same counts, whatever the order
        return ordered

    def __repr__(self) -> str:
        return f"Lengths({self.lengths.tolist()}, steps={self.steps})"
