r"""Looking inside recurrent networks: gradients through time, gates, state norms, attention, parameter counts.

Everything here works on any model that contains rnnkit recurrent modules (:class:`rnnkit.LSTM`, ``GRU``,
``RNN`` or :class:`rnnkit.Recurrent`, at any depth of the model), on one batch:

* **gradient through time**: for every layer-direction and every time step t, the norm

  .. math::
      g_t = \lVert \partial L / \partial h_t \rVert_F
          = \Big(\sum_{b=1}^{B} \sum_{j} \big(\partial L / \partial h_{t,b,j}\big)^2\Big)^{1/2},

  the gradient of the loss L (as ``loss_fn`` returns it, e.g. a batch mean) with respect to the hidden
  state h_t (B, H) that the cell emits at step t, taken over the whole batch and all units. It is the
  *total* derivative: both the direct path (h_t is the layer's output at t, read by whatever comes next)
  and the path through the later steps, dL/dh_t = (direct) + dL/dh_{t+1} dh_{t+1}/dh_t (+ through c_t for
  the LSTM, whose c_t carries its own gradient). For a many-to-one loss read at step T the direct path is
  zero except at T, so g_t against T - t shows how the error signal decays (vanishes) or grows (explodes)
  with distance (Bengio et al. 1994; Hochreiter et al. 2001; Pascanu et al. 2013, section 2). With an LSTM
  projection h_t is the projected state; with zoneout it is the state before zoneout mixes it.
* **gate statistics** per step: for the LSTM's input, forget and output gates i_t, f_t, o_t and the GRU's
  reset and update gates r_t, z_t, the mean activation over the valid (sequence, unit) pairs, the fraction
  that is *saturated*, below :data:`SATURATION_LOW` = 0.05 or above :data:`SATURATION_HIGH` = 0.95 (where
  sigma'(a) = sigma(a)(1 - sigma(a)) < 0.0475, so almost no gradient passes into the gate), and the mean
  of each unit over the batch (the gate heatmap, steps x units);
* **state norms** per step: the mean over valid sequences of ||h_t||_2 and, for the LSTM, ||c_t||_2;
* **attention** weights of a :class:`rnnkit.seq2seq.Seq2Seq` (target step x source position), or of a
  classifier with attention pooling; a model without attention gives None, not an error;
* **parameter counts** per component next to the closed-form counts of :mod:`rnnkit.parameters`.

How: inside :func:`diagnose` a step hook (:meth:`rnnkit.LSTMCell.register_step_hook`) on each cell of every
rnnkit recurrent module keeps the h_t each step of ``recur`` returns (a separate autograd node per step, so
``torch.autograd.grad(loss, [h_1, ..., h_T])`` gives exactly the quantity above) and the gates the cell computed
for that step (its ``gates``, the one definition of them); while a cell has a hook, the layers run it stepped
(:mod:`rnnkit.fast.dispatch`: a fused kernel or the fast path has no per-step tensors), and a forward pre-hook
and hook on the module note which call the steps belong to. The model's parameter gradients are not touched.

Steps past a sequence's length (padding) are left out of every statistic (their gradient is 0 anyway).
A backward direction runs over each sequence's valid prefix reversed; its statistics are put back in the
input's time order, so position t means the same input element in both directions.

Results are dataclasses whose :meth:`Diagnostics.to_dict` is plain JSON (undefined values are None);
the plot functions write PNG files with matplotlib's Agg backend.

Example::

    model = SequenceRegressor(SequenceRegressorConfig(cell="lstm", input_size=2, bidirectional=False))
    result = diagnose(model, lambda m: m.loss(m(inputs), targets))
    trace = result.layers[0]
    trace.grad_norm            # [g_1, ..., g_T]
    trace.gates["forget"].saturated
    plot_gradient_norms({"lstm": trace.grad_norm}, "grad.png")
    json.dumps(result.to_dict())
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence
from torch.utils.hooks import RemovableHandle

from rnnkit import cancel
from rnnkit.cells import GRUCell, LSTMCell, RNNCell, Step
from rnnkit.layers import RecurrentLayer
from rnnkit.parameters import FORMULA_NOTE, GATES, count_parameters
from rnnkit.plots import plot_gates as _draw_gates
from rnnkit.plots import plot_gradient_norms, plot_state_norms  # the instrument plots keep their names here
from rnnkit.recurrent import Recurrent

__all__ = [
    "SATURATION_LOW",
    "SATURATION_HIGH",
    "GATE_NAMES",
    "GateStats",
    "LayerTrace",
    "AttentionMaps",
    "Diagnostics",
    "diagnose",
    "gate_activations",
    "attention_maps",
    "parameter_report",
    "by_distance",
    "plot_gradient_norms",
    "plot_gates",
    "plot_state_norms",
]

#: A gate value below this counts as saturated (closed): sigma'(a) < 0.0475 there.
SATURATION_LOW = 0.05
#: A gate value above this counts as saturated (open).
SATURATION_HIGH = 0.95

#: The gates reported per cell type, in the order the cell stacks them (the LSTM's candidate g_t and the GRU's
#: candidate n_t are tanh units, not gates, and are left out).
GATE_NAMES: dict[str, tuple[str, ...]] = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update"),
                                          "rnn": ()}


# ----------------------------------------------------------------------------------------------------------
# Gates from the equations
# ----------------------------------------------------------------------------------------------------------


def _cell_kind(cell: nn.Module) -> str | None:
    if isinstance(cell, LSTMCell):
        return "lstm"
    if isinstance(cell, GRUCell):
        return "gru"
    if isinstance(cell, RNNCell):
        return "rnn"
    return None


def gate_activations(
    cell: nn.Module, xp_t: Tensor, state, recurrent_mask: Tensor | None = None, *, candidate: bool = False
) -> dict[str, Tensor]:
    r"""The gate activations of one step of an rnnkit cell: its own ``gates`` (:meth:`rnnkit.LSTMCell.gates`,
    :meth:`rnnkit.GRUCell.gates`), the one definition ``recur`` is built on.

    Inputs: ``xp_t`` (B, G*H) = ``cell.input_projection(x_t)``, the previous ``state`` and the variational
    ``recurrent_mask`` if any.

    LSTM (gates stacked i, f, g, o; Ba et al. 2016 for ``layer_norm``)::

        a_t = xp_t + W_hh h_{t-1}        (or + LN(W_hh h_{t-1}) with layer_norm)      (B, 4H)
        i_t = sigma(a_i), f_t = sigma(a_f), o_t = sigma(a_o), g_t = tanh(a_g)

    GRU (stacked r, z, n)::

        r_t, z_t = sigma(xp_{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})     (LN of the recurrent (r, z) block if set)
        n_t = tanh(xp_n + r_t * (W_hn h_{t-1} + b_hn))               reset_after=True (torch)
        n_t = tanh(xp_n + W_hn (r_t * h_{t-1}) + b_hn)               reset_after=False (Cho et al. 2014)

    Returns:
        ``{"input", "forget", "output"}`` (LSTM) or ``{"reset", "update"}`` (GRU), each (B, H); with
        ``candidate=True`` also ``"candidate"`` (g_t or n_t). An RNN cell has no gates: ``{}``.
    """
    kind = _cell_kind(cell)
    if kind is None:
        raise ValueError(f"gate_activations expects an rnnkit RNNCell, LSTMCell or GRUCell, got {type(cell).__name__}")
    if kind == "rnn":
        return {}
    return _named_gates(kind, cell.gates(xp_t, state, recurrent_mask)._asdict(), candidate)


def _named_gates(kind: str, gates: Mapping[str, Tensor], candidate: bool) -> dict[str, Tensor]:
    """The gates of :data:`GATE_NAMES` in their order (then the candidate, if asked for) from a cell's gates."""
    names = GATE_NAMES[kind] + (("candidate",) if candidate else ())
    return {name: gates[name] for name in names}


# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------


@dataclass
class GateStats:
    """One gate of one layer-direction over the steps of a batch (position t in the input's time order).

    Attributes:
        name: "input", "forget", "output" (LSTM) or "reset", "update" (GRU).
        mean: (T,) mean activation over the valid (sequence, unit) pairs at step t (None: no valid sequence).
        saturated: (T,) fraction of those pairs below SATURATION_LOW or above SATURATION_HIGH.
        closed: (T,) fraction below SATURATION_LOW; ``saturated - closed`` is the fraction wide open.
        unit_mean: (T, H) mean of each unit over the valid sequences: the heatmap of :func:`plot_gates`.
    """

    name: str
    mean: list[float | None]
    saturated: list[float | None]
    closed: list[float | None]
    unit_mean: list[list[float | None]]


@dataclass
class LayerTrace:
    """What one layer-direction did in one forward call of a recurrent module.

    Attributes:
        module: the module's path in the model (``""`` when the model is the layer itself).
        call: 0 for the module's first forward call inside :func:`diagnose`, 1 for the next, ... A module
            called once per time step (a decoder stepping through its outputs) gets one trace over all steps.
        layer: the layer index l; direction: 0 forward, 1 backward; cell: "lstm", "gru" or "rnn".
        steps: T; batch_size: B; lengths: (B,) valid steps of each sequence.
        grad_norm: (T,) ||dL/dh_t|| over batch and units (see the module docstring), or None if the loss
            does not depend on this layer's states.
        hidden_norm: (T,) mean over valid sequences of ||h_t||_2; cell_norm: the same for c_t (LSTM), else None.
        gates: one :class:`GateStats` per gate (empty for an RNN, or when gates were not asked for).
    """

    module: str
    call: int
    layer: int
    direction: int
    cell: str
    steps: int
    batch_size: int
    lengths: list[int]
    grad_norm: list[float] | None
    hidden_norm: list[float | None]
    cell_norm: list[float | None] | None
    gates: dict[str, GateStats] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """e.g. ``encoder.recurrent/l0_reverse`` (``#1`` appended for a second call of the module)."""
        base = (self.module or "(model)") + f"/l{self.layer}" + ("_reverse" if self.direction else "")
        return base + (f"#{self.call}" if self.call else "")


@dataclass
class AttentionMaps:
    """Attention weights of one batch, each sentence trimmed to its own lengths.

    Attributes:
        kind: "seq2seq" (rows: target steps, columns: source positions) or "pooling" (one row of weights over
            the steps of each sequence, from a classifier's attention pooling).
        weights: per sentence, a (T_b, S_b) list of rows (a single row for pooling); each row sums to 1.
        source_lengths: S_b; target_lengths: T_b (None for pooling).
        mean_entropy: mean over all rows of the entropy -sum_s a_s ln a_s (nats): 0 when each step looks at
            one position, ln S when it spreads evenly.
    """

    kind: str
    weights: list[list[list[float]]]
    source_lengths: list[int]
    target_lengths: list[int] | None
    mean_entropy: float


@dataclass
class Diagnostics:
    """Everything :func:`diagnose` measured on one batch; :meth:`to_dict` is plain JSON."""

    loss: float
    layers: list[LayerTrace]
    parameters: dict[str, Any]
    attention: AttentionMaps | None = None
    saturation_thresholds: tuple[float, float] = (SATURATION_LOW, SATURATION_HIGH)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (lists, numbers, strings, None; every float finite or None)."""
        data = asdict(self)
        for trace, entry in zip(self.layers, data["layers"], strict=True):
            entry["name"] = trace.name
        data["saturation_thresholds"] = list(self.saturation_thresholds)
        return _finite(data)

    def to_json(self, **options: Any) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **options)

    def layer(self, name: str) -> LayerTrace:
        """The trace called ``name`` (see :attr:`LayerTrace.name`); ValueError listing the names otherwise."""
        for trace in self.layers:
            if trace.name == name:
                return trace
        raise ValueError(f"no layer trace named {name!r}; the traces are {[t.name for t in self.layers]}")


def _finite(value: Any) -> Any:
    """Replace non-finite floats by None, recursively (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------------------
# Recording the steps
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _CellRecord:
    """The per-step tensors of one layer-direction in one call, in the order the cell saw the steps."""

    layer: int
    direction: int
    kind: str
    hidden: list[Tensor] = field(default_factory=list)  # h_t (B, H), in the graph
    cell_state: list[Tensor] = field(default_factory=list)  # c_t (B, H), detached (LSTM)
    gates: dict[str, list[Tensor]] = field(default_factory=dict)  # detached (B, H) per step


@dataclass
class _Call:
    module: str
    call: int
    lengths: Tensor | None  # (B,) or None: all steps valid
    cells: list[_CellRecord]


def _recurrent_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The rnnkit recurrent modules (layers and :class:`Recurrent`) of a model, in module order."""
    found: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if isinstance(module, (RecurrentLayer, Recurrent)):
            found.append((path, module))
    return found


def _lengths_of_call(forward, args: tuple, kwargs: dict) -> Tensor | None:
    """The (B,) lengths a layer's forward was called with: ``lengths=``, or those of a PackedSequence."""
    try:
        bound = inspect.signature(forward).bind(*args, **kwargs)
    except TypeError:
        return None  # the module will raise its own, clearer error
    arguments = bound.arguments
    first = next(iter(arguments.values()), None)
    if isinstance(first, PackedSequence):
        return pad_packed_sequence(first)[1]  # (B,) in the caller's batch order, as the own path runs it
    lengths = arguments.get("lengths")
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths).to(torch.long).cpu()
    return lengths.reshape(1) if lengths.dim() == 0 else lengths


@contextmanager
def _recording(model: nn.Module, gates: bool) -> Iterator[list[_Call]]:
    """Record each cell's steps in every rnnkit recurrent module of ``model``, through hooks: a step hook on each
    cell (which also puts the layer on the path that steps its cells) and a forward pre-hook and hook on each
    module (which call the steps belong to)."""
    modules = _recurrent_modules(model)
    if not modules:
        raise ValueError(
            "diagnose needs a model containing rnnkit recurrent modules (rnnkit.LSTM / GRU / RNN or "
            f"rnnkit.Recurrent); {type(model).__name__} has none (torch.nn layers run fused kernels with no "
            "per-step states to inspect)"
        )
    calls: list[_Call] = []
    counts: dict[str, int] = {}
    active: dict[int, _Call] = {}  # id(module) -> the call in progress
    handles: list[RemovableHandle] = []

    def step_hook(module_id: int, index: int) -> Callable[[nn.Module, Step], None]:
        def record(cell: nn.Module, step: Step) -> None:
            cancel.check()  # a cancelled request (rnnkit serve) stops here, between two time steps
            call = active.get(module_id)
            if call is None:
                return
            cell_record = call.cells[index]
            cell_record.hidden.append(step.h_t)
            if cell_record.kind == "lstm":
                cell_record.cell_state.append(step.new_state[1].detach())
            if gates and cell_record.kind != "rnn":
                for name, value in _named_gates(cell_record.kind, step.gates, candidate=False).items():
                    cell_record.gates.setdefault(name, []).append(value.detach())

        return record

    def watch(path: str, module: nn.Module) -> None:
        cells = list(module.cells)
        kinds = [_cell_kind(c) for c in cells]
        directions = module.num_directions

        def starts(module: nn.Module, args: tuple, kwargs: dict) -> None:
            number = counts.get(path, 0)
            counts[path] = number + 1
            records = [_CellRecord(i // directions, i % directions, kind or "") for i, kind in enumerate(kinds)]
            active[id(module)] = _Call(path, number, _lengths_of_call(module.forward, args, kwargs), records)

        def ends(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            calls.append(active.pop(id(module)))

        handles.append(module.register_forward_pre_hook(starts, with_kwargs=True))
        handles.append(module.register_forward_hook(ends, with_kwargs=True))
        for index, (cell, kind) in enumerate(zip(cells, kinds, strict=True)):
            if kind is not None:  # other cells follow the plain cell contract and cannot be traced
                handles.append(cell.register_step_hook(step_hook(id(module), index)))

    try:
        for path, module in modules:
            watch(path, module)
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _to_positions(stacked: Tensor, lengths: Tensor, direction: int) -> Tensor:
    """Put a backward direction's steps (T, B, ...) back in input order: loop step k of sequence b read
    position L_b - 1 - k (for k < L_b), the same reversal of the valid prefix the layer applied."""
    if direction == 0:
        return stacked
    steps = stacked.shape[0]
    t = torch.arange(steps).unsqueeze(1)  # (T, 1)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    index = index.view(steps, -1, *([1] * (stacked.dim() - 2))).expand_as(stacked).to(stacked.device)
    return stacked.gather(0, index)


def _masked_mean(values: Tensor, valid: Tensor) -> list[float | None]:
    """Mean over the valid entries of each step: values (T, B, ...), valid (T, B) -> (T,) (None: none valid)."""
    weights = valid.to(values.dtype).view(*valid.shape, *([1] * (values.dim() - 2))).expand_as(values)
    total = (values * weights).flatten(1).sum(1)  # (T,)
    count = weights.flatten(1).sum(1)  # (T,)
    return [float(s / c) if c > 0 else None for s, c in zip(total.tolist(), count.tolist(), strict=True)]


def _gate_stats(name: str, values: Tensor, valid: Tensor) -> GateStats:
    """values (T, B, H) in input order, valid (T, B) -> the gate's per-step statistics."""
    closed = (values < SATURATION_LOW).to(values.dtype)
    saturated = closed + (values > SATURATION_HIGH).to(values.dtype)
    counts = valid.sum(1, keepdim=True).to(values.dtype)  # (T, 1)
    unit_sum = (values * valid.unsqueeze(-1)).sum(1)  # (T, H)
    unit_mean = torch.where(counts > 0, unit_sum / counts.clamp(min=1), torch.full_like(unit_sum, math.nan))
    return GateStats(
        name=name,
        mean=_masked_mean(values, valid),
        saturated=_masked_mean(saturated, valid),
        closed=_masked_mean(closed, valid),
        unit_mean=[[None if math.isnan(v) else v for v in row] for row in unit_mean.tolist()],
    )


def _merge_single_steps(calls: list[_Call]) -> list[_Call]:
    """Join the calls of a module that is stepped one time step per call (a decoder generating or trained
    step by step) into one call over all its steps, so that its trace runs over time like any other."""
    by_module: dict[str, list[_Call]] = {}
    for call in calls:
        by_module.setdefault(call.module, []).append(call)
    merged = []
    for module, group in by_module.items():
        single = all(len(record.hidden) <= 1 for call in group for record in call.cells)
        sizes = {record.hidden[0].shape[0] for call in group for record in call.cells if record.hidden}
        if len(group) == 1 or not single or len(sizes) != 1 or any(c.lengths is not None for c in group):
            merged.extend(group)
            continue
        joined = _Call(module, 0, None, [_CellRecord(r.layer, r.direction, r.kind) for r in group[0].cells])
        for call in group:
            for target, record in zip(joined.cells, call.cells, strict=True):
                target.hidden += record.hidden
                target.cell_state += record.cell_state
                for name, values in record.gates.items():
                    target.gates.setdefault(name, []).extend(values)
        merged.append(joined)
    return merged


def _trace(call: _Call, record: _CellRecord, grads: Sequence[Tensor | None] | None) -> LayerTrace:
    """Turn one layer-direction's recorded steps (and their gradients) into a :class:`LayerTrace`."""
    hidden = torch.stack([h.detach() for h in record.hidden])  # (T, B, H)
    steps, batch_size = hidden.shape[0], hidden.shape[1]
    lengths = call.lengths if call.lengths is not None else torch.full((batch_size,), steps, dtype=torch.long)
    lengths = lengths.clamp(max=steps).cpu()
    valid = (torch.arange(steps).unsqueeze(1) < lengths).to(hidden.device)  # (T, B), True at real steps
    hidden = _to_positions(hidden, lengths, record.direction)
    grad_norm = None
    if grads is not None:
        stacked = torch.stack([torch.zeros_like(h) if g is None else g for h, g in zip(record.hidden, grads,
                                                                                        strict=True)])
        stacked = _to_positions(stacked.detach(), lengths, record.direction)  # (T, B, H)
        grad_norm = stacked.flatten(1).norm(dim=1).tolist()  # (T,) Frobenius norm over batch and units
    cell_norm = None
    if record.cell_state:
        cell_state = _to_positions(torch.stack(record.cell_state), lengths, record.direction)  # (T, B, H)
        cell_norm = _masked_mean(cell_state.norm(dim=-1), valid)
    gates = {}
    for name, values in record.gates.items():
        gates[name] = _gate_stats(name, _to_positions(torch.stack(values), lengths, record.direction), valid)
    return LayerTrace(
        module=call.module, call=call.call, layer=record.layer, direction=record.direction, cell=record.kind,
        steps=steps, batch_size=batch_size, lengths=lengths.tolist(), grad_norm=grad_norm,
        hidden_norm=_masked_mean(hidden.norm(dim=-1), valid), cell_norm=cell_norm, gates=gates,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# The entry points
# ----------------------------------------------------------------------------------------------------------


def diagnose(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    *,
    gates: bool = True,
    gradients: bool = True,
    attention: AttentionMaps | None = None,
) -> Diagnostics:
    """Run ``loss_fn(model)`` once and measure, for every rnnkit recurrent layer-direction inside ``model``,
    ||dL/dh_t|| per step, gate statistics and state norms (see the module docstring for the exact quantities).

    Args:
        model: a model containing rnnkit recurrent modules, or such a module itself. Its mode (train or eval)
            is left as it is: call ``model.eval()`` first to measure without dropout.
        loss_fn: computes the scalar loss L of one batch from the model, e.g.
            ``lambda m: m.loss(m(inputs, lengths), targets)``.
        gates: record gate statistics (the gates each step computes anyway).
        gradients: compute ||dL/dh_t|| (by ``torch.autograd.grad``: parameter ``.grad`` fields are untouched).
        attention: attention maps to include (see :func:`attention_maps`); a classifier with attention pooling
            has its weights picked up from the call.
    Returns:
        :class:`Diagnostics`, with one :class:`LayerTrace` per layer-direction and forward call.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"diagnose expects a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable model -> scalar loss, got {type(loss_fn).__name__}")
    with _recording(model, gates) as calls, torch.enable_grad():
        loss = loss_fn(model)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        given = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {given}")
    calls = _merge_single_steps(calls)
    records = [(call, record) for call in calls for record in call.cells if record.hidden]
    grads: dict[int, Sequence[Tensor | None]] = {}
    if gradients and loss.requires_grad:
        wanted = [h for _, record in records for h in record.hidden if h.requires_grad]
        found = torch.autograd.grad(loss, wanted, allow_unused=True) if wanted else ()
        by_id = {id(h): g for h, g in zip(wanted, found, strict=True)}
        for position, (_, record) in enumerate(records):
            if any(h.requires_grad for h in record.hidden):
                grads[position] = [by_id.get(id(h)) for h in record.hidden]
    traces = [_trace(call, record, grads.get(position)) for position, (call, record) in enumerate(records)]
    if attention is None:
        attention = _pooling_attention(model)
    return Diagnostics(loss=float(loss.detach()), layers=traces, parameters=parameter_report(model),
                       attention=attention)


def _pooling_attention(model: nn.Module) -> AttentionMaps | None:
    """The attention-pooling weights a classifier kept from its last call (``attention_weights`` (B, T))."""
    weights = getattr(model, "attention_weights", None)
    if not isinstance(weights, Tensor) or weights.dim() != 2:
        return None
    rows = weights.detach().cpu()
    lengths = (rows > 0).sum(1).clamp(min=1).tolist()  # padding gets weight exactly 0 (masked softmax)
    maps = [[row[:n].tolist()] for row, n in zip(rows, lengths, strict=True)]
    return AttentionMaps("pooling", maps, lengths, None, _mean_entropy(maps))


def _mean_entropy(maps: list[list[list[float]]]) -> float:
    entropies = [-sum(a * math.log(a) for a in row if a > 0) for sentence in maps for row in sentence]
    return sum(entropies) / len(entropies) if entropies else math.nan


@torch.no_grad()
def attention_maps(
    model: nn.Module, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_lengths: Tensor | None = None
) -> AttentionMaps | None:
    """The attention weights of a :class:`rnnkit.seq2seq.Seq2Seq` under teacher forcing, in evaluation mode.

    Args:
        src: (B, S) source ids; src_lengths: (B,). tgt_in: (B, T) decoder inputs (BOS + target).
        tgt_lengths: (B,) number of real target steps of each row (default: the non-pad inputs of ``tgt_in``).
    Returns:
        :class:`AttentionMaps` of kind "seq2seq", rows = target steps, or None for a decoder without attention.
    """
    if not hasattr(model, "decoder") or not hasattr(model, "start"):
        raise ValueError(f"attention_maps expects a Seq2Seq model, got {type(model).__name__}")
    if not getattr(model.decoder, "has_attention", False):
        return None
    was_training = model.training
    model.eval()
    try:
        _, weights = model(src, src_lengths, tgt_in, return_attention=True)  # (B, T, S)
    finally:
        model.train(was_training)
    if weights is None:
        return None
    src_lengths = torch.as_tensor(src_lengths).cpu()
    if tgt_lengths is None:
        tgt_lengths = (tgt_in != getattr(model, "pad_id", 0)).sum(1)  # BOS counts: it is step 1's input
    tgt_lengths = torch.as_tensor(tgt_lengths).cpu()
    weights = weights.detach().cpu()
    maps = [weights[b, : int(tgt_lengths[b]), : int(src_lengths[b])].tolist() for b in range(weights.shape[0])]
    return AttentionMaps("seq2seq", maps, src_lengths.tolist(), tgt_lengths.tolist(), _mean_entropy(maps))


def _formula_text(cell: str, d: int, n: int, p: int, bias: bool) -> str:
    """The closed form with the numbers filled in, e.g. ``4[20(10 + 20) + 20]``."""
    gates = GATES[cell]
    recurrent = p or n
    inner = f"{n}({d} + {recurrent})" + (f" + {n}" if bias else "")
    text = f"{gates}[{inner}]" if gates > 1 else inner
    return text + (f" + {p}*{n}" if p else "")


def parameter_report(model: nn.Module) -> dict[str, Any]:
    """Parameter counts of ``model`` as plain JSON: totals, per component / role / kind, and each recurrent
    layer-direction's actual count next to the closed forms of :mod:`rnnkit.parameters`.

    ``recurrent[i]["formula_text"]`` is the course formula with the numbers in, e.g. ``4[20(10 + 20) + 20]``
    for an LSTM layer with d = 10, n = 20; ``torch_formula`` adds torch's second bias vector (and layer-norm
    gains), which is what the model actually holds (``actual``).
    """
    if isinstance(model, Recurrent):
        # count_parameters does not yet handle a bare Recurrent as the root module (its cells' paths are not
        # recognised as inside it, and a KeyError follows); counted inside a container its layer-directions
        # are named "recurrent.l0", ...
        model = nn.ModuleDict({"recurrent": model})
    counts = count_parameters(model)
    recurrent = []
    for r in counts.recurrent:
        entry = asdict(r)
        entry["formula_text"] = _formula_text(r.cell, r.input_size, r.hidden_size, r.proj_size, r.bias)
        recurrent.append(entry)
    return {
        "total": counts.total,
        "trainable": counts.trainable,
        "by_component": dict(counts.by_component),
        "by_role": dict(counts.by_role),
        "by_kind": dict(counts.by_kind),
        "recurrent": recurrent,
        "note": FORMULA_NOTE,
    }


def by_distance(trace: LayerTrace) -> list[float]:
    """The trace's ||dL/dh_t|| ordered by distance k = 0, 1, ... from the step where its direction ends
    (forward: position T - 1 - k; backward: position k): how far the signal had to travel back."""
    if trace.grad_norm is None:
        raise ValueError(f"{trace.name} has no gradient norms (the loss does not depend on it)")
    return list(reversed(trace.grad_norm)) if trace.direction == 0 else list(trace.grad_norm)


# ----------------------------------------------------------------------------------------------------------
# Plots: drawn in rnnkit.plots (plot_gradient_norms and plot_state_norms are imported from there)
# ----------------------------------------------------------------------------------------------------------


def plot_gates(trace: LayerTrace, out_png: str | Path, *, title: str | None = None, max_units: int = 64) -> Path:
    """:func:`rnnkit.plots.plot_gates` of one layer-direction, naming in its title the thresholds
    (:data:`SATURATION_LOW`, :data:`SATURATION_HIGH`) the saturated fractions were counted with."""
    return _draw_gates(trace, out_png, title=title, max_units=max_units, saturation=(SATURATION_LOW, SATURATION_HIGH))
