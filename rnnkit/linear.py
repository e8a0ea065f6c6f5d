"""The cells' hoisted input projection ``W x + b`` over all time steps, through oneDNN where that is faster.

A recurrent layer's input projection is one large product, (T*B, D) x (D, G*H), and its backward two more:
dL/dx = g W, (T*B, G*H) x (G*H, D), and dL/dW = g^T x. With float32 on a CPU, ``torch.mm`` hands them to MKL.
MKL dispatches its AVX-512 kernels on Intel CPUs only; on an AMD CPU it takes its AVX2 path, and there oneDNN's
matmul (reached through ``torch.ops.mkldnn._linear_pointwise``, the operator torch's own compiler emits for
linear layers) runs the first two markedly faster. Measured on an AMD EPYC with AVX-512 at T*B = 6400 with 2
threads (``python -m benchmarks.linear --repeats 5``, results in benchmarks/results/linear.md): x W^T 137 -> 186
GFLOP/s and g W 169 -> 212 at (D, G*H) = (256, 1024), 120 -> 156 and 134 -> 194 at (512, 2048). For dL/dW (a
reduction over the T*B rows) MKL was the faster one (173 against 89), so it keeps it. On an Intel Xeon with
AVX-512 and AMX two runs of the same benchmark gave oneDNN 0.69x and 0.97x MKL's speed for x W^T at H = 256,
0.99x and 1.02x for g W, 1.08x and 1.25x for a B = 64 step's product, 0.95x and 0.96x for its backward; and it
cost the layers 0-16% (a paired A/B, GRU at (64, 100, 256) 0.84x, the layer-norm LSTM 0.89x): so oneDNN is used
on AMD CPUs only (:func:`chosen`).

:func:`linear` is ``F.linear`` with that choice made: oneDNN for float32 CPU tensors of at least
:data:`MIN_MACS` multiply-adds when torch has it, else ``F.linear`` itself (so float64, gradcheck and small
inputs take torch's path unchanged; so do tracing, export, torch.compile and autocast). :func:`product` makes the
same choice for the fast path's per-step products (B = 64 on the AMD CPU: 103 -> 118 GFLOP/s at H = 256, 121 ->
151 at H = 512). ``RNNKIT_ONEDNN=0`` turns oneDNN off, ``RNNKIT_ONEDNN=1`` on whatever the CPU. Both compute
the same products; results differ by float32 rounding (the summation order), which ``tests/test_linear.py``
bounds against ``F.linear``, values and gradients.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["linear", "product", "uses_onednn", "chosen", "cpu_vendor", "cpuinfo_field", "MIN_MACS"]

#: Fewest multiply-adds (rows x D x F) for which oneDNN is used. Below it its fixed cost per call (~17 us
#: against torch.mm's ~2.4 us) loses: 1 x 256 x 768 took 29 against 17 us, 8 x 256 x 768 0.74x torch.mm's speed.
#: Above it, on the AMD CPU at the shapes measured (steps from 64 x 128 x 512 to 128 x 512 x 2048, input
#: projections of 704 to 16,000 rows), oneDNN ran at 0.95-1.8x torch.mm's speed, below 1.0 only twice.
MIN_MACS = 1 << 22

#: Whether this torch can run oneDNN's matmul at all.
_SUPPORTED = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpuinfo_field(name: str, cpuinfo: str | None = None) -> str:
    """The first CPU's ``name`` field (``vendor_id``, ``model name``) in /proc/cpuinfo or ``cpuinfo``; "" where
    there is none (another OS, or an architecture without the field)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def cpu_vendor(cpuinfo: str | None = None) -> str:
    """The x86 CPU's vendor string (``AuthenticAMD``, ``GenuineIntel``), from /proc/cpuinfo or ``cpuinfo``;
    "" where there is none (another OS or architecture)."""
    return cpuinfo_field("vendor_id", cpuinfo)


def chosen(setting: str | None = None, vendor: str | None = None) -> bool:
    """Whether to send products to oneDNN: ``RNNKIT_ONEDNN`` (``setting``) "1" yes, "0" no; unset or "auto"
    where MKL takes its AVX2 path, an AMD CPU (``vendor``; where oneDNN was measured faster)."""
    setting = os.environ.get("RNNKIT_ONEDNN", "auto") if setting is None else setting
    if setting not in ("0", "1", "auto"):
        raise ValueError(f"RNNKIT_ONEDNN must be 0, 1 or auto, got {setting!r}")
    if setting != "auto":
        return setting == "1"
    return (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD"


#: Whether :func:`linear` and :func:`product` use oneDNN (from :data:`MIN_MACS` multiply-adds up).
_AVAILABLE = _SUPPORTED and chosen()


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x W^T + b`` by oneDNN's matmul: x (N, D), weight (F, D), any strides -> (N, F)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")


def _tracing() -> bool:
    """Under ONNX export, TorchScript or torch.compile: those need ``F.linear`` (oneDNN's operator has no
    ONNX form, and torch's compiler chooses its own kernels)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export() or (
        torch.compiler.is_compiling())


def uses_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """Whether :func:`linear` and :func:`product` send ``x W^T (+ b)`` to oneDNN."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (  # the cheap size test first: the fast path asks at every step, mostly of small products
        _AVAILABLE
        and all(isinstance(t, Tensor) for t in tensors)  # not torch.fx proxies
        and x.dim() >= 2
        and x.numel() * weight.shape[0] >= MIN_MACS
        and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided for t in tensors)
        and not _tracing()
        and not torch.is_autocast_enabled("cpu")  # F.linear casts to the autocast dtype; oneDNN here would not
    )


class _Linear(torch.autograd.Function):
    """``x W^T + b`` with oneDNN for the forward and dL/dx, MKL (torch.mm) for dL/dW."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (N, D)
        ctx.save_for_backward(rows, weight)
        ctx.has_bias = bias is not None
        ctx.leading = x.shape[:-1]
        return _onednn(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])  # (..., F)

    @staticmethod
    def backward(ctx, d_out: Tensor):
        rows, weight = ctx.saved_tensors
        d_rows = d_out.reshape(-1, d_out.shape[-1])  # (N, F)
        d_x = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_x = _onednn(d_rows, weight.t(), None).view(*ctx.leading, weight.shape[1])  # (N, F) x (F, D)
        if ctx.needs_input_grad[1]:
            d_weight = d_rows.t() @ rows  # (F, N) x (N, D)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_bias = d_rows.sum(0)
        return d_x, d_weight, d_bias


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``: (..., D) x (F, D) -> (..., F), by oneDNN where :func:`uses_onednn`."""
    if not uses_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias)


def product(a: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """One step's ``a W^T (+ b)`` in the fast path's loops, no autograd: (n, K) x (F, K) -> a new (n, F).

    ``weight`` may be a transposed view (the backward's ``d W`` passes ``W.t()``)."""
    if uses_onednn(a, weight, bias):
        return _onednn(a, weight, bias)
    return torch.mm(a, weight.t()) if bias is None else torch.addmm(bias, a, weight.t())
