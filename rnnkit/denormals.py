"""Subnormal floats on the CPU: flushed to zero in rnnkit's own processes.

A float32 below 2^-126 (about 1.2e-38) is subnormal; x86 CPUs compute with subnormal operands through a slow
microcode path. A trained sequence model makes many of them: a confident softmax gives probabilities below 1e-38
to most classes (a logit gap above 87), and those probabilities (in the forward of attention, in the gradient of
the cross-entropy) go into matrix products. On an Intel Xeon a G2P model's training step slowed to about half its
speed within two epochs this way, at unchanged shapes (benchmarks/results/denormals.md). Setting the CPU's
flush-to-zero and denormals-are-zero modes (``torch.set_flush_denormal``) removes the slowdown; it changes values
only below 1.2e-38, where float32 has lost its precision anyway.

The modes belong to each thread, and a thread starts with its creator's: torch's and MKL's OpenMP worker threads
are created at the first parallel computation, so the call must come before it. ``rnnkit`` commands flush at
start; a program using the library calls :func:`flush_denormals` first (it says whether it was early enough). The
library itself never changes the mode: a drop-in layer computes what torch.nn computes.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["flush_denormals", "denormals_flushed"]

_SUBNORMAL_BITS = 1 << 20  # a float32 with this bit pattern is subnormal (about 1.5e-39)


def denormals_flushed() -> bool:
    """True if the calling thread and torch's worker threads all treat subnormal floats as zero: a matrix product
    of subnormal values, split over the threads, comes out all zeros."""
    size = 512  # large enough that the product is split over the threads (a small one runs on one)
    # Made from its bits: converting the Python float 1.5e-39 would already give 0 on a flushing thread.
    subnormal = torch.full((size * max(1, torch.get_num_threads() // 2), size), _SUBNORMAL_BITS,
                           dtype=torch.int32).view(torch.float32)
    product = torch.mm(subnormal, torch.eye(size))
    return bool((product == 0).all())


def flush_denormals() -> bool:
    """Flush subnormal floats to zero in this process (``torch.set_flush_denormal(True)``); call it before any
    computation, so that the worker threads, created then, inherit the mode. Returns True if every thread
    flushes; warns and returns False if the worker threads existed already (only the calling thread flushes) or
    the CPU has no such mode."""
    if not torch.set_flush_denormal(True):
        warnings.warn("this CPU cannot flush subnormal floats to zero: products of them stay slow", stacklevel=2)
        return False
    if denormals_flushed():
        return True
    warnings.warn("subnormal floats are flushed on this thread only: torch's worker threads were created before "
                  "rnnkit.denormals.flush_denormals() was called (call it before any computation)", stacklevel=2)
    return False
