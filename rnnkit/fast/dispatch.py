"""The one place that chooses how rnnkit's recurrent layers run, and says why: :func:`explain`.

A call of ``rnnkit.LSTM``/``GRU``/``RNN`` (or :class:`rnnkit.Recurrent`) runs on one of these paths:

* **fused**: torch's own kernel (``torch._VF.lstm``/``gru``/``rnn_tanh``/``rnn_relu``) with the layer's parameters,
  as ``torch.nn`` runs it (:func:`layer_path`);
* **fast**: rnnkit's fast path, one autograd Function per layer-direction (:mod:`rnnkit.fast.recurrence`) whose
  backward computes all weight gradients with one matrix product after the loop (:func:`cell_path`). Its step
  loop runs (:func:`step_loop`)

  - **native-sequence**: in C, products included, through the BLAS ``sgemm_`` torch's own products call;
  - **native-step**: in Python with one C kernel per step for the elementwise work;
  - **torch-ops**: in Python with torch operations (float64, non-CPU tensors, no C compiler);

  and its products go to oneDNN or stay with torch/MKL (:func:`products_onednn`);
* **reference**: the cells' ``recur`` stepped with autograd (``use_fast_path=False``, zoneout, recurrent dropout
  in training, a cell with a step hook, tracing for ONNX or TorchScript, or no fast path for that cell).

The inputs of the choice: the cell and its options, the sizes, the device and dtype, whether gradients are
recorded, ``lengths=``, dropout and training, the CPU (oneDNN on AMD CPUs, where MKL takes its AVX2 path), whether
the native kernels built (:mod:`rnnkit.fast.native`), whether torch is tracing or compiling, and the environment:
``RNNKIT_KERNELS=0`` (no native kernels) and ``RNNKIT_ONEDNN=0|1|auto``. Every rule was measured; the figures are
in benchmarks/results/ and docs/fast-path.md. :func:`override` forces a path for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.fast import native

__all__ = ["Choice", "Explanation", "explain", "layer_path", "cell_path", "step_loop", "products_onednn",
           "breaks_graph", "run_eagerly",
           "products_onednn_for", "fast_path_has", "torch_has_kernel",
           "override", "onednn_chosen", "cpu_vendor", "cpuinfo_field", "MIN_MACS", "ONEDNN_SUPPORTED", "LOOPS"]

LOOPS = ("native-sequence", "native-step", "torch-ops")

#: Fewest multiply-adds (rows x D x F) for which a product goes to oneDNN (where it is chosen). Below it oneDNN's
#: fixed cost per call loses to torch.mm's (benchmarks/results/fast-path-notes.md).
MIN_MACS = 1 << 22

#: Whether this torch can run oneDNN's matmul at all (``torch.ops.mkldnn._linear_pointwise``).
ONEDNN_SUPPORTED = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")

# What override() forces: "loop" (one of LOOPS) and "products" ("onednn" or "torch").
_forced: dict[str, str] = {}


@dataclass
class Choice:
    """A path and the reasons for it, in the order they were weighed."""

    path: str
    reasons: list[str] = field(default_factory=list)


# -- the CPU and the environment ------------------------------------------------------------------------------


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
    """The x86 CPU's vendor string (``AuthenticAMD``, ``GenuineIntel``); "" where there is none."""
    return cpuinfo_field("vendor_id", cpuinfo)


def onednn_chosen(setting: str | None = None, vendor: str | None = None) -> bool:
    """Whether to send products to oneDNN: ``RNNKIT_ONEDNN`` (``setting``) "1" yes, "0" no; unset or "auto" on an
    AMD CPU (``vendor``), where MKL takes its AVX2 path and oneDNN was measured faster (on an Intel Xeon it cost the
    layers 0-16%)."""
    setting = os.environ.get("RNNKIT_ONEDNN", "auto") if setting is None else setting
    if setting not in ("0", "1", "auto"):
        raise ValueError(f"RNNKIT_ONEDNN must be 0, 1 or auto, got {setting!r}")
    if setting != "auto":
        return setting == "1"
    return (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD"


_ONEDNN = ONEDNN_SUPPORTED and onednn_chosen()


def _tracing() -> bool:
    """Under ONNX export, TorchScript, torch.export or torch.compile's tracing: those need plain torch operations
    (the fast path's autograd Functions and oneDNN's operator have no ONNX form; the compilers trace what they
    run)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


# -- torch.compile ----------------------------------------------------------------------------------------------


def breaks_graph() -> bool:
    """Whether a layer call that torch.compile is tracing runs eagerly instead, as a graph break: the compiled model
    then runs the layer as eager mode does (the fast path, or torch's kernel), as dynamo treats torch.nn's RNN
    modules. Not when exporting (an exported graph has no breaks), nor with ``torch._dynamo.config.allow_rnn``
    (then dynamo traces the cells' plain operations, as it would torch.nn's, see :func:`cell_path`)."""
    if not torch.compiler.is_dynamo_compiling() or torch.compiler.is_exporting():
        return False
    from torch._dynamo import config

    return not config.allow_rnn


@torch.compiler.disable
def run_eagerly(function, *args, **kwargs):
    """``function(*args, **kwargs)`` outside any graph torch.compile is building (see :func:`breaks_graph`)."""
    return function(*args, **kwargs)


# -- products -------------------------------------------------------------------------------------------------


def products_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """Whether ``x W^T (+ b)`` goes to oneDNN (:mod:`rnnkit.fast.products`): where oneDNN is chosen for this CPU,
    for float32 CPU tensors of at least :data:`MIN_MACS` multiply-adds, not while tracing, not under autocast
    (``F.linear`` casts to the autocast dtype; oneDNN's operator would not)."""
    forced = _forced.get("products")
    if forced == "torch" or (forced is None and not _ONEDNN):
        return False
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (  # the cheap size test first: the fast path asks at every step, mostly of small products
        ONEDNN_SUPPORTED
        and all(isinstance(t, Tensor) for t in tensors)  # not torch.fx proxies
        and x.dim() >= 2
        and (forced == "onednn" or x.numel() * weight.shape[0] >= MIN_MACS)
        and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided for t in tensors)
        and not _tracing()
        and not torch.is_autocast_enabled("cpu")
    )


# -- the fast path's step loop ----------------------------------------------------------------------------------


def _native_tensors(tensors: tuple[Tensor, ...]) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.stride(-1) == 1 for t in tensors)


def step_loop(xp: Tensor, *parameters: Tensor, macs: int = 0) -> str:
    """Where the fast path runs a recurrence's steps (one of :data:`LOOPS`), for its input projection ``xp`` and
    the ``parameters`` its loop reads (the loop in C reads them whole: they must be contiguous).

    ``macs``: a step's product, for a recurrence whose Python loop sends its products through
    :func:`products_onednn` (GRU, layer-norm LSTM): where oneDNN would take them the loop stays in Python (the
    loop in C calls torch's BLAS, not oneDNN). Elsewhere the loop in C was as fast or faster at every size
    measured (benchmarks/results/fast-path-notes.md).
    """
    forced = _forced.get("loop")
    native_tensors = _native_tensors((xp, *parameters))
    if forced is not None:
        if forced != "torch-ops" and not (native_tensors and native.loaded()):
            raise RuntimeError(f"rnnkit: the forced step loop {forced!r} cannot run here (native kernels: "
                               f"{native.load().status}; input {xp.dtype} on {xp.device.type})")
        if forced == "native-sequence" and not native.has_blas():
            raise RuntimeError("rnnkit: the forced step loop 'native-sequence' needs torch's sgemm_, not found")
        return forced
    if not (native_tensors and native.loaded()):
        return "torch-ops"
    whole = (all(t.is_contiguous() for t in parameters) and native.has_blas()
             and not (macs and products_onednn_for(macs)))
    return "native-sequence" if whole else "native-step"


def products_onednn_for(macs: int) -> bool:
    """Whether a float32 CPU product of ``macs`` multiply-adds would go to oneDNN."""
    forced = _forced.get("products")
    if forced is not None:
        return forced == "onednn"
    return _ONEDNN and ONEDNN_SUPPORTED and macs >= MIN_MACS and not _tracing()


# -- cells: fast path or reference path --------------------------------------------------------------------------


def fast_path_has(cell: nn.Module) -> bool:
    """Whether the fast path computes this cell's recurrence: exactly the rnnkit cell classes (a subclass may change
    the equations): ``RNNCell``, ``LSTMCell`` without projection, ``GRUCell`` without layer norm; and any cell with
    a ``run_sequence(xp, state, valid)`` method (:mod:`rnnkit.minimal`)."""
    if callable(getattr(type(cell), "run_sequence", None)):
        return True
    if type(cell) is RNNCell:
        return True
    if type(cell) is LSTMCell:
        return cell.proj_size == 0
    if type(cell) is GRUCell:
        return not cell.layer_norm
    return False


def torch_has_kernel(cell: nn.Module) -> bool:
    """Whether torch's fused kernels compute this cell: the standard LSTM (with or without projection), the GRU
    with the reset gate after the product, the Elman RNN; none with layer norm."""
    if type(cell) is LSTMCell:
        return not cell.layer_norm
    if type(cell) is GRUCell:
        return cell.reset_after and not cell.layer_norm
    return type(cell) is RNNCell


def cell_path(cell: nn.Module, *, fast_path: bool = True, recurrent_dropout: bool = False,
              zoneout: float = 0.0) -> Choice:
    """"fast" or "reference" for one layer-direction's cell.

    Args:
        fast_path: the module's ``use_fast_path``/``fast_path`` setting.
        recurrent_dropout: whether a variational dropout mask applies to this call (training).
        zoneout: the zoneout probability (training or not: at evaluation it mixes states too).
    """
    if not fast_path:
        return Choice("reference", ["use_fast_path=False: the cells are stepped with autograd"])
    if not fast_path_has(cell):
        return Choice("reference", [f"the fast path has no recurrence for {_describe(cell)}"])
    if getattr(cell, "has_step_hooks", False):
        return Choice("reference", ["a step hook is registered on the cell (rnnkit.diagnostics records each step)"])
    if recurrent_dropout:
        return Choice("reference", ["recurrent dropout in training: a mask per sequence on h_{t-1} at every step"])
    if zoneout:
        return Choice("reference", ["zoneout mixes each step's state with the previous one"])
    if _tracing():
        return Choice("reference", ["tracing or compiling: the tracer follows the cells' plain torch operations"])
    return Choice("fast", [f"the fast path computes {_describe(cell)}"])


def _describe(cell: nn.Module) -> str:
    if type(cell) is LSTMCell:
        return "an LSTM cell" + (" with projection" if cell.proj_size else "") + (
            " with layer norm" if cell.layer_norm else "")
    if type(cell) is GRUCell:
        return "a GRU cell" + ("" if cell.reset_after else " (reset before)") + (
            " with layer norm" if cell.layer_norm else "")
    if type(cell) is RNNCell:
        return f"an Elman RNN cell ({cell.nonlinearity})"
    return f"a {type(cell).__name__}"


# -- layers: torch's fused kernel or rnnkit's own path ------------------------------------------------------------


def layer_path(layer: nn.Module, *, grad: bool, variable_lengths: bool) -> Choice:
    """"fused" (torch's kernel) or "own" (rnnkit's cells: fast or reference path) for a call of a drop-in layer.

    ``use_fused=True``: torch's kernel wherever it applies (standard cells, none of the extras). ``"auto"`` (the
    default): the same, except where rnnkit's fast path was measured faster on CPU (benchmarks/results/layers.md,
    2 threads): with gradients recorded, for variable lengths (torch's packed kernels have a slow backward) and for
    the GRU and the Elman RNN (torch's CPU kernels for them compute the weight gradients step by step). The LSTM
    without lengths and every call without gradients keep torch's kernel. In training with dropout between layers
    torch's kernel is kept, so that the dropout draws are torch's. ``False``: never.
    """
    reasons = []
    blockers = []
    if layer.use_fused is False:
        blockers.append("use_fused=False")
    cells = layer.cells
    if not all(torch_has_kernel(cell) for cell in cells):
        blockers.append("an extra torch has no kernel for (layer norm or the reset-before GRU)")
    if layer.merge != "concat":
        blockers.append(f"merge={layer.merge!r}")
    if layer.residual:
        blockers.append("residual=True")
    if layer.zoneout:
        blockers.append(f"zoneout={layer.zoneout}")
    if layer.recurrent_dropout and layer.training:
        blockers.append(f"recurrent_dropout={layer.recurrent_dropout} in training")
    if any(getattr(cell, "has_step_hooks", False) for cell in cells):
        blockers.append("a step hook on a cell (rnnkit.diagnostics records each step)")
    if torch.compiler.is_dynamo_compiling() and not torch.compiler.is_exporting():
        # only with torch._dynamo.config.allow_rnn (else the layer is a graph break, see breaks_graph): its
        # decomposition of torch's LSTM kernel fails without gradients (mkldnn_rnn_layer), the cells' ops do not
        blockers.append("torch.compile traces the cells' operations (torch._dynamo.config.allow_rnn)")
    if blockers:
        return Choice("own", [f"torch's kernel does not apply: {', '.join(blockers)}"])
    if layer.use_fused is True:
        return Choice("fused", ["use_fused=True: torch's kernel wherever it applies"])
    if not grad:
        return Choice("fused", ["no gradients recorded: torch's kernel is as fast or faster for inference"])
    if layer.training and layer.dropout > 0.0:
        return Choice("fused", [f"dropout={layer.dropout} between layers in training: torch's kernel draws it"])
    if not (layer.use_fast_path and all(fast_path_has(cell) for cell in cells)):
        return Choice("fused", ["rnnkit's fast path does not cover these cells"])
    if _tracing():
        return Choice("fused", ["tracing or exporting: torch's kernel is one operator in the graph"])
    if variable_lengths:
        reasons.append("gradients with variable lengths: torch's packed kernels have a slow backward")
        return Choice("own", reasons)
    if layer.mode != "LSTM":
        reasons.append(f"gradients through {layer.mode.split('_')[0]}: torch's CPU kernel computes the weight "
                       "gradients step by step; the fast path in one product")
        return Choice("own", reasons)
    return Choice("fused", ["an LSTM without lengths: torch's kernel (oneDNN) was as fast or faster"])


# -- forcing a path (tests, benchmarks) ------------------------------------------------------------------------


@contextlib.contextmanager
def override(*, loop: str | None = None, products: str | None = None) -> Iterator[None]:
    """Force the fast path's step loop (one of :data:`LOOPS`) and where its products go ("onednn": every float32
    CPU product, whatever its size; "torch"), whatever this machine would choose; for tests and benchmarks."""
    if loop is not None and loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if products not in (None, "onednn", "torch"):
        raise ValueError(f"products must be 'onednn' or 'torch', got {products!r}")
    if products == "onednn" and not ONEDNN_SUPPORTED:
        raise RuntimeError("this torch has no oneDNN (mkldnn) build")
    saved = dict(_forced)
    _forced.update({key: value for key, value in (("loop", loop), ("products", products)) if value is not None})
    try:
        yield
    finally:
        _forced.clear()
        _forced.update(saved)


# -- explain ---------------------------------------------------------------------------------------------------


@dataclass
class Explanation:
    """Which path a call runs and why; ``str()`` is the text :func:`explain` is read for.

    Attributes:
        module: what was asked about (its repr's first line).
        path: "fused", "fast", "reference" or "mixed" (layer-directions on different paths).
        reasons: why, outermost choice first.
        cells: per layer-direction (``l0``, ``l0_reverse``, ...): its path, its step loop and products on the fast
            path, and why.
        native: the native kernels' state (see ``python -m rnnkit.fast``).
    """

    module: str
    path: str
    reasons: list[str]
    cells: dict[str, str] = field(default_factory=dict)
    native: str = ""

    def __str__(self) -> str:
        lines = [f"{self.module}: {self.path} path", *(f"  because {reason}" for reason in self.reasons)]
        lines += [f"  {name}: {text}" for name, text in self.cells.items()]
        if self.native:
            lines.append(f"  native kernels: {self.native}")
        return "\n".join(lines)


def explain(module: nn.Module, x: Tensor, lengths: Tensor | list[int] | None = None, hx=None) -> Explanation:
    """Which path ``module(x, hx, lengths=lengths)`` runs, and why (without running it): "why is this slow?".

    Args:
        module: an rnnkit ``LSTM``/``GRU``/``RNN`` or :class:`rnnkit.Recurrent`.
        x: an input as the module would take it (its shape, dtype, device and ``requires_grad`` count).
        lengths: the ``lengths=`` the call would pass.
        hx: the initial state the call would pass (its ``requires_grad`` counts).
    Example::

        >>> print(rnnkit.explain(rnnkit.GRU(28, 128, batch_first=True), torch.randn(32, 28, 28)))
    """
    from rnnkit.layers import RecurrentLayer
    from rnnkit.recurrent import Recurrent

    if not isinstance(module, (RecurrentLayer, Recurrent)):
        raise ValueError(f"explain expects an rnnkit LSTM, GRU, RNN or Recurrent, got {type(module).__name__}")
    name = repr(module).splitlines()[0]
    build = native.load()
    native_text = build.status + (f" ({build.reason})" if build.reason else "")
    states = [] if hx is None else list(hx) if isinstance(hx, (tuple, list)) else [hx]
    grad = torch.is_grad_enabled() and (
        any(isinstance(t, Tensor) and t.requires_grad for t in [x, *states])
        or any(p.requires_grad for p in module.parameters()))
    data = x.data if hasattr(x, "batch_sizes") else x  # a PackedSequence's (N, D) data
    variable = lengths is not None or hasattr(x, "batch_sizes")
    if isinstance(module, RecurrentLayer):
        top = layer_path(module, grad=grad, variable_lengths=variable)
        if top.path == "fused":
            return Explanation(name, "fused", top.reasons, native=native_text)
        reasons = top.reasons
        fast_path = module.use_fast_path
    else:
        reasons, fast_path = [], module.fast_path
    cells = list(module.cells)
    if hasattr(x, "batch_sizes"):
        batch = int(x.batch_sizes[0])
    else:
        batch = 1 if data.dim() < 3 else data.shape[0 if module.batch_first else 1]
    directions = 2 if module.bidirectional else 1
    masked = module.recurrent_dropout > 0 and module.training
    described, paths = {}, set()
    for index, cell in enumerate(cells):
        choice = cell_path(cell, fast_path=fast_path, recurrent_dropout=masked, zoneout=module.zoneout)
        paths.add(choice.path)
        label = f"l{index // directions}" + ("_reverse" if index % directions else "")
        text = f"{choice.path} ({'; '.join(choice.reasons)})"
        if choice.path == "fast" and not callable(getattr(type(cell), "run_sequence", None)):
            text += "; " + _loop_text(cell, data, batch, grad)
        described[label] = text
    path = paths.pop() if len(paths) == 1 else "mixed"
    return Explanation(name, path, reasons, described, native_text)


def _loop_text(cell: nn.Module, x: Tensor, batch: int, grad: bool) -> str:
    """How the fast path would run this cell on ``x`` (``batch`` sequences): its step loop and its products."""
    hidden, gates = cell.hidden_size, cell.gate_count * cell.hidden_size
    uses_products = type(cell) is GRUCell and cell.reset_after or type(cell) is LSTMCell and cell.layer_norm
    loop = step_loop(x.new_empty(1, 1), macs=batch * hidden * gates if uses_products else 0)
    where = {"native-sequence": "the step loop in C (products through torch's sgemm_)",
             "native-step": "the step loop in Python with a C kernel per step",
             "torch-ops": "the step loop in Python with torch operations"}[loop]
    projection = "oneDNN" if products_onednn_for(x.shape[-1] * gates * max(1, x.numel() // x.shape[-1])) else "torch"
    return f"{where}; input projection by {projection}" + ("; backward by the same loop" if grad else "")
