"""The fast path's matrix products: ``F.linear``, or oneDNN's matmul where :mod:`rnnkit.fast.dispatch` chooses it.

A recurrent layer's input projection is one large product, (T*B, D) x (D, G*H), and its backward two more:
dL/dx = g W, (T*B, G*H) x (G*H, D), and dL/dW = g^T x. With float32 on a CPU, ``torch.mm`` hands them to MKL,
which runs its AVX-512 kernels on Intel CPUs only; on an AMD CPU it takes its AVX2 path, and there oneDNN's
matmul (``torch.ops.mkldnn._linear_pointwise``, the operator torch's own compiler emits for linear layers) ran
the first two markedly faster, MKL the third (benchmarks/results/linear.md). So :func:`linear` sends the forward
and dL/dx to oneDNN and keeps dL/dW with MKL, and :func:`product` does the same for the per-step products of the
fast path's loops in Python. Both compute the same products as ``F.linear``; results differ by float32 rounding
(the summation order), which ``tests/test_fast_products.py`` bounds, values and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.fast.dispatch import products_onednn

__all__ = ["linear", "product", "onednn"]


def onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x W^T + b`` by oneDNN's matmul, whatever the dispatcher would choose: x (N, D), weight (F, D), any
    strides -> (N, F)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")


class _Linear(torch.autograd.Function):
    """``x W^T + b`` with oneDNN for the forward and dL/dx, MKL (torch.mm) for dL/dW."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (N, D)
        ctx.save_for_backward(rows, weight)
        ctx.has_bias = bias is not None
        ctx.leading = x.shape[:-1]
        return onednn(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])  # (..., F)

    @staticmethod
    def backward(ctx, d_out: Tensor):
        rows, weight = ctx.saved_tensors
        d_rows = d_out.reshape(-1, d_out.shape[-1])  # (N, F)
        d_x = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_x = onednn(d_rows, weight.t(), None).view(*ctx.leading, weight.shape[1])  # (N, F) x (F, D)
        if ctx.needs_input_grad[1]:
            d_weight = d_rows.t() @ rows  # (F, N) x (N, D)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_bias = d_rows.sum(0)
        return d_x, d_weight, d_bias


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``: (..., D) x (F, D) -> (..., F), by oneDNN where the dispatcher says."""
    if not products_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias)


def product(a: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """One step's ``a W^T (+ b)`` in the fast path's loops, no autograd: (n, K) x (F, K) -> a new (n, F).

    ``weight`` may be a transposed view (the backward's ``d W`` passes ``W.t()``)."""
    if products_onednn(a, weight, bias):
        return onednn(a, weight, bias)
    return torch.mm(a, weight.t()) if bias is None else torch.addmm(bias, a, weight.t())
