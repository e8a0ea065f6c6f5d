"""What the fast path's recurrences share: the per-step schedule of a sorted batch, the buffers of every step,
dL/dW_hh in blocks, and a fast tanh.

Every recurrence (:mod:`rnnkit.fast.lstm`, ``gru``, ``rnn``) follows one pattern. Forward: for each step t,
n = n_t rows run (the batch sorted longest first, see :class:`rnnkit.fast.lengths.Lengths`), reading h_{t-1} from
hs[t][:n] and writing h_t into hs[t + 1][:n]. Backward: ``d_h_run`` (B, H) holds dL/dh_t not yet counting the
step's own output; it starts as dL/dh_n, which is right for the rows whose last step is t (their h_n is h_t), and
each step replaces rows [0, n) by what flows back to h_{t-1}.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

__all__ = ["STEP_BLOCK_BYTES", "GRADIENT_BLOCK_BYTES", "Steps", "RecurrentGradient", "padded", "finals", "buffer",
           "flat", "spans", "keeps", "tanh_"]

#: Block sizes of the per-step storage (see Steps and RecurrentGradient): below glibc's 32 MB mmap threshold.
STEP_BLOCK_BYTES = 16 << 20
GRADIENT_BLOCK_BYTES = 4 << 20


def padded(schedule: list[int], steps: int, batch: int) -> bool:
    """Whether some row stops before the last step (its buffers' rows past its length are never written)."""
    return len(schedule) < steps or min(schedule) < batch


def finals(hs: Tensor, schedule: list[int], batch: int) -> Tensor:
    """Each sequence's last h: rows [n_{t+1}, n_t) end at step t, so their final state is hs[t + 1] there."""
    final = hs[len(schedule)].clone()
    for t in range(len(schedule) - 1):
        if schedule[t + 1] < schedule[t]:
            final[schedule[t + 1] : schedule[t]] = hs[t + 1, schedule[t + 1] : schedule[t]]
    return final


def buffer(like: Tensor, shape, padded: bool) -> Tensor:
    """A (T, B, ...) buffer: zeros where rows may never be written (past a length), else uninitialised."""
    return like.new_zeros(shape) if padded else like.new_empty(shape)


def flat(x: Tensor) -> Tensor:
    """(T, B, F) -> (T*B, F), for the weight gradients' one big product."""
    return x.reshape(-1, x.shape[-1])


class Steps:
    """Rows (B, W) of T steps, indexed like a (T, B, W) tensor (``store[t, :n]``), kept in blocks of at most
    :data:`STEP_BLOCK_BYTES`: glibc serves an allocation above 32 MB with fresh pages (an mmap) that fault on first
    touch at every call, while smaller blocks are reused from the heap (the page faults and system time this
    saves are in benchmarks/results/fast-path-notes.md)."""

    def __init__(self, blocks: list[Tensor], size: int) -> None:
        self.blocks, self.size = blocks, size

    @classmethod
    def empty(cls, like: Tensor, steps: int, batch: int, width: int, zero: bool = False) -> Steps:
        size = max(1, min(steps, STEP_BLOCK_BYTES // max(1, batch * width * like.element_size())))
        make = like.new_zeros if zero else like.new_empty
        return cls([make(min(size, steps - start), batch, width) for start in range(0, steps, size)], size)

    def __getitem__(self, key):
        t, *rest = key if isinstance(key, tuple) else (key,)
        return self.blocks[t // self.size][(t % self.size, *rest)]

    def __setitem__(self, key, value) -> None:
        self[key].copy_(value)

    def spans(self):
        """(first step, block) for every block, for per-block products."""
        return [(index * self.size, block) for index, block in enumerate(self.blocks)]

    def from_step(self, t: int) -> Tensor:
        """Steps t, t + 1, ... of t's block, (K, B, W): a start pointer for the whole-sequence kernels."""
        return self.blocks[t // self.size][t % self.size :]


class RecurrentGradient:
    """dL/d(W_hh h_{t-1}) of every step, needed only for dW_hh = sum_t d_t^T h_{t-1} (and db_hh = sum_t d_t):
    kept in a block of K steps that is multiplied out (one (G*H, K*B) x (K*B, H) product) each time it fills,
    going backwards, rather than in one (T, B, G*H) buffer, which at common sizes is large enough to be served
    with fresh pages that fault on first touch at every call; the block is reused (see :class:`Steps`).
    """

    def __init__(self, like: Tensor, hs: Tensor, width: int, weight: bool, bias: bool):
        steps, batch = hs.shape[0] - 1, hs.shape[1]
        self.size = max(1, min(steps, GRADIENT_BLOCK_BYTES // max(1, batch * width * like.element_size())))
        self.block = like.new_zeros(self.size, batch, width)
        self.hs, self.weight, self.bias = hs, weight, bias
        self.d_weight = self.d_bias = None

    def step(self, t: int, rows: int) -> Tensor:
        """The (B, G*H) slot of step t; rows past ``rows`` are kept zero (sequences that have ended)."""
        slot = self.block[t % self.size]
        if rows < slot.shape[0]:
            slot[rows:].zero_()
        return slot

    def done(self, t: int) -> None:
        """Step t's slot is written; at a block's first step multiply the block out."""
        if t % self.size:
            return
        filled = min(self.size, self.hs.shape[0] - 1 - t)
        block = flat(self.block[:filled])
        if self.weight:
            product = block.t() @ flat(self.hs[t : t + filled])  # h_{s-1} of steps s = t .. t + filled - 1
            self.d_weight = product if self.d_weight is None else self.d_weight.add_(product)
        if self.bias:
            total = block.sum(0)
            self.d_bias = total if self.d_bias is None else self.d_bias.add_(total)


def spans(steps: int, *sizes: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of steps 0 .. steps - 1 that cross no multiple of any block size in ``sizes``."""
    bounds = sorted({0, steps, *(m for size in sizes for m in range(size, steps, size))})
    return list(itertools.pairwise(bounds))


def keeps(ctx) -> bool:
    """Whether the backward will run (else the forward stores nothing for it)."""
    return any(ctx.needs_input_grad)


def tanh_(x: Tensor, out: Tensor) -> Tensor:
    """``out = tanh(x)`` (out may be x). On CPU in float32/64 this is numpy's SIMD tanh: torch's CPU tanh goes
    through MKL's vector math library, measured several times slower than torch's own sigmoid and numpy's tanh
    (benchmarks/results/fast-path-notes.md), the largest elementwise cost of a step in the torch-operation loops.
    Same values to within 1e-7 relative."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not out.requires_grad:
        np.tanh(x.numpy(), out=out.numpy())
        return out
    return torch.tanh(x, out=out)
