"""Parameter counts: by component, by role and kind, and the closed-form counts of the course table.

The closed forms for one layer-direction with input width d and hidden width n (one bias vector)::

    RNN    n(d + n) + n          W_ih (n, d), W_hh (n, n), b (n)
    GRU   3[n(d + n) + n]        three blocks: reset r, update z, candidate n
    LSTM  4[n(d + n) + n]        four blocks: input i, forget f, candidate g, output o

In general G[n(d + n) + n] with G gates. torch.nn (and so rnnkit, which keeps its parameters) stores two bias
vectors, ``bias_ih`` and ``bias_hh``, because cuDNN does; only their sum matters, so torch's count is the
formula + G*n per layer-direction. With a projection to p < n (Sak et al. 2014) W_hh is (G*n, p) and W_hr (p, n)
adds p*n: G[n(d + p) + n] + p*n, and deeper layers read p (or 2p) features. Layer normalisation adds its gains
(and shifts): 10n for the rnnkit LSTM (4n + 4n gate gains, n + n cell gain and shift), 6n for the GRU.

Example::

    counts = count_parameters(torch.nn.LSTM(10, 20, num_layers=2))
    counts.total                      # 5920
    formula_count("lstm", 10, 20, num_layers=2, second_bias=True)   # 5920 as well
    print(counts.table())             # per component, with the formula next to each recurrent layer
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.checks import check_size
from rnnkit.layers import RecurrentLayer
from rnnkit.recurrent import Recurrent

__all__ = [
    "GATES",
    "FORMULA_NOTE",
    "layer_direction_count",
    "formula_count",
    "count_parameters",
    "ParameterCount",
    "RecurrentCount",
]

#: Gate blocks G per cell type.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}

FORMULA_NOTE = (
    "Closed form per layer-direction (input d, hidden n, one bias): RNN n(d+n)+n, GRU 3[n(d+n)+n], "
    "LSTM 4[n(d+n)+n]. torch.nn and cuDNN keep a second bias vector (bias_ih and bias_hh, only their sum "
    "matters), so torch's count is the formula + G*n per layer-direction (G = 1, 3, 4 gates)."
)

_LAYER_NORM_EXTRA = {"rnn": 0, "gru": 6, "lstm": 10}  # rnnkit's layer-norm gains and shifts, in units of n


def _cell_type(cell: str) -> str:
    name = cell.lower()
    if name.startswith("rnn"):  # rnn, rnn_tanh, rnn_relu
        name = "rnn"
    if name not in GATES:
        raise ValueError(f"cell must be one of {tuple(GATES)}, got {cell!r}")
    return name


def layer_direction_count(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    second_bias: bool = False,
    proj_size: int = 0,
    layer_norm: bool = False,
) -> int:
    """Parameters of one layer-direction: G[n(d + n) + n] (the course table), plus the optional extras.

    Args:
        cell: "rnn", "gru" or "lstm" (G = 1, 3, 4).
        input_size: d. hidden_size: n.
        bias: include the bias vector (G*n).
        second_bias: torch's/cuDNN's second bias vector (another G*n).
        proj_size: p > 0 for an LSTM projection: W_hh becomes (G*n, p) and W_hr (p, n) is added.
        layer_norm: rnnkit's layer-norm parameters (LSTM 10n, GRU 6n).
    """
    kind = _cell_type(cell)
    d = check_size("input_size", input_size)
    n = check_size("hidden_size", hidden_size)
    p = check_size("proj_size", proj_size, allow_zero=True)
    if p and kind != "lstm":
        raise ValueError(f"proj_size is for LSTM layers only, got proj_size={p} for {cell!r}")
    gates = GATES[kind]
    recurrent_width = p or n
    count = gates * n * (d + recurrent_width)  # W_ih (G*n, d) and W_hh (G*n, n or p)
    if bias:
        count += gates * n * (2 if second_bias else 1)
    if p:
        count += p * n  # W_hr (p, n)
    if layer_norm:
        if kind == "rnn":
            raise ValueError(f"layer_norm is for LSTM and GRU layers, got {cell!r}")
        count += _LAYER_NORM_EXTRA[kind] * n
    return count


def formula_count(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    bias: bool = True,
    second_bias: bool = False,
    proj_size: int = 0,
    layer_norm: bool = False,
    merge: str = "concat",
) -> int:
    """Closed-form count of a whole (stacked, bi-directional) layer; ``second_bias=True`` gives torch's count.

    Layer 0 reads d features; deeper layers read the previous layer's output: (p or n) x directions with
    ``merge="concat"``, (p or n) with ``"sum"``.
    """
    directions = 2 if bidirectional else 1
    width = check_size("input_size", input_size)
    output_width = proj_size or hidden_size
    total = 0
    for _ in range(check_size("num_layers", num_layers)):
        total += directions * layer_direction_count(
            cell, width, hidden_size, bias=bias, second_bias=second_bias, proj_size=proj_size, layer_norm=layer_norm
        )
        width = output_width * directions if merge == "concat" else output_width
    return total


@dataclass
class RecurrentCount:
    """One recurrent layer-direction: its actual count next to the closed forms."""

    component: str  # e.g. "encoder.rnn.l1_reverse"
    cell: str  # "rnn", "gru" or "lstm"
    input_size: int
    hidden_size: int
    proj_size: int
    bias: bool
    layer_norm: bool
    actual: int
    formula: int  # the course table, one bias vector: G[n(d + n) + n] (+ projection)
    torch_formula: int  # + G*n for the second bias vector (+ layer-norm extras if any)


@dataclass
class ParameterCount:
    """What :func:`count_parameters` returns."""

    total: int = 0
    trainable: int = 0
    by_component: dict[str, int] = field(default_factory=dict)  # module path (+ layer-direction) -> count
    by_role: dict[str, int] = field(default_factory=dict)  # embedding / recurrent / attention / output / other
    by_kind: dict[str, int] = field(default_factory=dict)  # weight / bias / layer_norm
    recurrent: list[RecurrentCount] = field(default_factory=list)
    rows: list[tuple[str, tuple[int, ...], int, str, str, str]] = field(default_factory=list)
    # (parameter name, shape, count, component, role, kind)

    def table(self) -> str:
        """A markdown report: components, roles, kinds, and each recurrent layer-direction against the formula."""
        lines = ["| component | parameters |", "|---|---:|"]
        lines += [f"| {name or '(root)'} | {count:,} |" for name, count in self.by_component.items()]
        lines += [f"| **total** | **{self.total:,}** |", ""]
        lines += ["| role | parameters |", "|---|---:|"]
        lines += [f"| {role} | {count:,} |" for role, count in self.by_role.items()]
        lines += ["", "| kind | parameters |", "|---|---:|"]
        lines += [f"| {kind} | {count:,} |" for kind, count in self.by_kind.items()]
        if self.recurrent:
            lines += [
                "",
                "| recurrent layer-direction | cell | d | n | actual | formula, one bias | torch, two biases |",
                "|---|---|---:|---:|---:|---:|---:|",
            ]
            for r in self.recurrent:
                extras = (f", p={r.proj_size}" if r.proj_size else "") + (", LN" if r.layer_norm else "")
                lines.append(
                    f"| {r.component} | {r.cell}{extras} | {r.input_size} | {r.hidden_size} | {r.actual:,} | "
                    f"{r.formula:,} | {r.torch_formula:,} |"
                )
            lines += ["", FORMULA_NOTE]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


_CELL_TYPES = ((LSTMCell, "lstm"), (GRUCell, "gru"), (RNNCell, "rnn"),
               (nn.LSTMCell, "lstm"), (nn.GRUCell, "gru"), (nn.RNNCell, "rnn"))
_OUTPUT_NAMES = re.compile(r"(^|[._])(out|output|outputs|head|classifier|generator|readout|logits|fc_out|out_proj)"
                           r"([._]|$)")
_ATTENTION_NAMES = re.compile(r"attn|attention")


def _layer_kind(module: nn.Module) -> str | None:
    """Cell type of a torch.nn or rnnkit multi-layer module (LSTM/GRU/RNN), else None."""
    if isinstance(module, (RecurrentLayer, nn.RNNBase)):
        return _cell_type(module.mode.split("_")[0])
    return None


def _single_cell_kind(module: nn.Module) -> str | None:
    for cls, kind in _CELL_TYPES:
        if isinstance(module, cls):
            return kind
    return None


def _role(path: str, module: nn.Module, recurrent: bool) -> str:
    if recurrent:
        return "recurrent"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    lowered = path.lower()
    if _ATTENTION_NAMES.search(lowered) or "attention" in type(module).__name__.lower():
        return "attention"
    if _OUTPUT_NAMES.search(lowered):
        return "output"
    return "other"


def _kind(name: str, module: nn.Module) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf.startswith("ln_") or isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return "layer_norm"
    return "bias" if "bias" in leaf else "weight"


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def count_parameters(module: nn.Module) -> ParameterCount:
    """Count a module's parameters by component, role (embedding, recurrent, attention, output, other) and kind.

    Recurrent layers (rnnkit or torch.nn LSTM/GRU/RNN, :class:`rnnkit.Recurrent`, and single cells) are split
    per layer-direction (``rnn.l0``, ``rnn.l0_reverse``, ...) and compared with the closed-form count of the
    course table (``formula``, one bias) and torch's count (``torch_formula``, two biases); see
    :data:`FORMULA_NOTE`. Shared parameters are counted once.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"count_parameters expects a torch.nn.Module, got {type(module).__name__}")
    result = ParameterCount()
    seen: set[int] = set()
    recurrent_groups: dict[str, dict] = {}

    def add(path: str, name: str, parameter, owner: nn.Module, component: str, role: str, group: dict | None,
            key: str | None = None):
        """Count one parameter; ``key`` is its name within its layer-direction (weight_ih_l1 -> weight_ih)."""
        if id(parameter) in seen:
            return
        seen.add(id(parameter))
        count = parameter.numel()
        kind = _kind(name, owner)
        result.total += count
        result.trainable += count if parameter.requires_grad else 0
        result.by_component[component] = result.by_component.get(component, 0) + count
        result.by_role[role] = result.by_role.get(role, 0) + count
        result.by_kind[kind] = result.by_kind.get(kind, 0) + count
        result.rows.append((_join(path, name), tuple(parameter.shape), count, component, role, kind))
        if group is not None:
            group["actual"] += count
            group["names"][key or name.rsplit(".", 1)[-1]] = parameter

    recurrent_paths = []  # modules whose parameters all belong to recurrent layer-directions
    for path, sub in module.named_modules():
        if any(path.startswith(prefix + ".") for prefix in recurrent_paths):
            continue  # handled with its container
        layer_kind = _layer_kind(sub)
        if layer_kind is not None:
            recurrent_paths.append(path)
            for name, parameter in sub.named_parameters(recurse=False):
                match = re.search(r"_l(\d+)(_reverse)?$", name)
                suffix = match.group(0)[1:] if match else ""
                component = _join(path, suffix)
                group = recurrent_groups.setdefault(component, _new_group(layer_kind, sub))
                add(path, name, parameter, sub, component, "recurrent", group, name[: match.start()] if match else name)
            continue
        if isinstance(sub, Recurrent):
            recurrent_paths.append(path)
            for index, cell in enumerate(sub.cells):
                layer, direction = divmod(index, sub.num_directions)
                component = _join(path, f"l{layer}" + ("_reverse" if direction else ""))
                kind = _single_cell_kind(cell)
                group = recurrent_groups.setdefault(component, _new_group(kind, cell)) if kind else None
                for name, parameter in cell.named_parameters():
                    add(_join(path, f"cells.{index}"), name, parameter, cell, component, "recurrent", group)
            continue
        cell_kind = _single_cell_kind(sub)
        if cell_kind is not None:
            recurrent_paths.append(path)
            group = recurrent_groups.setdefault(path, _new_group(cell_kind, sub))
            for name, parameter in sub.named_parameters():
                add(path, name, parameter, sub, path, "recurrent", group)
            continue
        role = _role(path, sub, recurrent=False)
        for name, parameter in sub.named_parameters(recurse=False):
            add(path, name, parameter, sub, path, role, None)

    for component, group in recurrent_groups.items():
        result.recurrent.append(_recurrent_count(component, group))
    return result


def _new_group(kind: str, owner: nn.Module) -> dict:
    return {"kind": kind, "owner": owner, "actual": 0, "names": {}}


def _recurrent_count(component: str, group: dict) -> RecurrentCount:
    """Read d, n, p from the parameter shapes of one layer-direction and evaluate the closed forms."""
    kind, names = group["kind"], group["names"]
    gates = GATES[kind]
    weight_ih = names["weight_ih"]
    hidden = weight_ih.shape[0] // gates
    input_size = weight_ih.shape[1]
    proj = names["weight_hr"].shape[0] if "weight_hr" in names else 0
    bias = "bias_ih" in names or "bias_hh" in names
    layer_norm = any(name.startswith("ln_") for name in names)
    formula = layer_direction_count(kind, input_size, hidden, bias=bias, proj_size=proj)
    torch_formula = layer_direction_count(
        kind, input_size, hidden, bias=bias, second_bias=True, proj_size=proj, layer_norm=layer_norm
    )
    return RecurrentCount(component, kind, input_size, hidden, proj, bias, layer_norm, group["actual"], formula,
                          torch_formula)
