"""Recurrent cells written from their equations: :class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell`.

Every cell follows one contract (as in flax linen)::

    h_t, state_t = cell(x_t, state_{t-1})

where ``state`` is ``h`` for the RNN and GRU cells and the pair ``(h, c)`` for the LSTM cell.

Each step is split in two, so that a layer can hoist the part that does not depend on the state out of the
time loop and compute it for all time steps with one matrix product::

    xp = cell.input_projection(x)            # x: (B, T, D) or (B, D) -> (..., G*H), G gates
    h_t, state_t = cell.recur(xp_t, state)   # one step, xp_t: (B, G*H)

``forward(x_t, state)`` is exactly ``recur(input_projection(x_t), state)``: the math of each cell is written
once. The gated cells expose the gate computation itself, ``cell.gates(xp_t, state)`` (a named tuple: the LSTM's
input, forget, candidate and output; the GRU's reset, update and candidate), which ``recur`` is built on; the
fast path (:mod:`rnnkit.fast`) computes the same equations over whole sequences and is checked against ``recur``
by the tests, and :mod:`rnnkit.diagnostics` reads the gates through :meth:`register_step_hook`, which hands each
step's gates, h_t and state to a callback as ``recur`` computes them.

Parameter names, shapes, gate order and initialisation are those of ``torch.nn`` (``weight_ih`` (G*H, D),
``weight_hh`` (G*H, H), ``bias_ih`` (G*H,), ``bias_hh`` (G*H,); LSTM gates i, f, g, o; GRU gates r, z, n;
every parameter uniform in (-1/sqrt(H), 1/sqrt(H))), so ``load_state_dict`` works with ``torch.nn.RNNCell``,
``torch.nn.LSTMCell`` and ``torch.nn.GRUCell``. torch keeps two bias vectors (for cuDNN); one would do, and
since they are only ever summed their sum is what matters.

Symbols used in the docstrings: ``x_t`` input at step t (D features), ``h_t`` hidden state / output
(H features, or P with an LSTM projection), ``c_t`` LSTM cell state (H), ``i_t, f_t, o_t`` input, forget and
output gates, ``g_t`` LSTM candidate cell, ``r_t, z_t`` GRU reset and update gates, ``n_t`` GRU candidate
state, ``sigma`` the logistic sigmoid, ``*`` the elementwise product, ``LN`` layer normalisation.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from rnnkit.checks import check_bool, check_size
from rnnkit.state import map_state

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "LSTMGates", "GRUGates", "Step", "State", "Linear",
           "LAYER_NORM_EPS"]

#: A cell state: ``h`` (B, H) for RNN/GRU cells, ``(h, c)`` for LSTM cells.
State = Tensor | tuple[Tensor, ...]

#: ``linear(x, weight, bias) -> x W^T + b``: how ``input_projection`` computes its product (``F.linear``; the fast
#: path passes its own, which sends large products to oneDNN where that is faster).
Linear = Callable[..., Tensor]


class LSTMGates(NamedTuple):
    """One LSTM step's gates, each (B, H): i_t, f_t, o_t in (0, 1) and the candidate g_t in (-1, 1)."""

    input: Tensor
    forget: Tensor
    candidate: Tensor
    output: Tensor


class GRUGates(NamedTuple):
    """One GRU step's gates, each (B, H): r_t, z_t in (0, 1) and the candidate n_t in (-1, 1)."""

    reset: Tensor
    update: Tensor
    candidate: Tensor


@dataclass
class Step:
    """What a step hook (:meth:`RNNCell.register_step_hook`) receives after each step of ``recur``.

    Attributes:
        xp_t: (B, G*H) the input projection of the step; state: the previous state; recurrent_mask: the
            variational dropout mask on h_{t-1} (None without); gates: the step's :class:`LSTMGates` or
            :class:`GRUGates` as a dict (empty for the Elman RNN); h_t: the step's output; new_state: the state
            after the step. All still in autograd's graph.
    """

    xp_t: Tensor
    state: State
    recurrent_mask: Tensor | None
    h_t: Tensor
    new_state: State
    gates: dict[str, Tensor] = field(default_factory=dict)

_NONLINEARITIES = ("tanh", "relu")

#: epsilon of every layer normalisation in the cells (added to the variance), as torch.nn.LayerNorm's default.
LAYER_NORM_EPS = 1e-5


def _layer_norm(x: Tensor, gain: Tensor, bias: Tensor | None = None, eps: float = LAYER_NORM_EPS) -> Tensor:
    """LN(x; gain, bias): normalise the last dimension to zero mean and unit variance, then scale and shift."""
    return F.layer_norm(x, (x.shape[-1],), gain, bias, eps)


class _Cell(nn.Module):
    """What the three cells share: sizes, the torch-named parameters, initialisation and the checked forward.

    Subclasses define ``gate_count`` (G), ``input_projection`` and ``recur``.
    """

    gate_count: int = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool, device=None, dtype=None) -> None:
        super().__init__()
        self._step_hooks: OrderedDict[int, Callable[[nn.Module, Step], None]] = OrderedDict()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.bias = check_bool("bias", bias)
        factory = {"device": device, "dtype": dtype}
        gates = self.gate_count * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))  # (G*H, D)
        self.weight_hh = nn.Parameter(torch.empty(gates, self.recurrent_size, **factory))  # (G*H, H or P)
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gates, **factory))  # (G*H,)
            self.bias_hh = nn.Parameter(torch.empty(gates, **factory))  # (G*H,)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    @property
    def recurrent_size(self) -> int:
        """Width of the state fed back through ``weight_hh`` (H, or P for a projected LSTM)."""
        return self.hidden_size

    @property
    def output_size(self) -> int:
        """Width of ``h_t``, the output of a step."""
        return self.recurrent_size

    def reset_parameters(self) -> None:
        """torch.nn's initialisation: every weight and bias uniform in (-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
                parameter = getattr(self, name, None)
                if parameter is not None:
                    parameter.uniform_(-bound, bound)

    def state_shapes(self, batch_size: int) -> tuple[int, ...] | tuple[tuple[int, ...], ...]:
        """Shape of the state for a batch: (B, H) or, for the LSTM, ((B, P or H), (B, H))."""
        return (batch_size, self.hidden_size)

    def initial_state(self, batch_size: int, *, dtype=None, device=None) -> State:
        """The zero state for ``batch_size`` sequences."""
        dtype = self.weight_ih.dtype if dtype is None else dtype
        device = self.weight_ih.device if device is None else device
        shapes = self.state_shapes(batch_size)
        if isinstance(shapes[0], tuple):
            return tuple(torch.zeros(shape, dtype=dtype, device=device) for shape in shapes)
        return torch.zeros(shapes, dtype=dtype, device=device)

    def check_state(self, state: State, batch_size: int) -> None:
        """Raise ValueError unless ``state`` has the structure and shapes of this cell's state."""
        expected = self.state_shapes(batch_size)
        if isinstance(expected[0], tuple):
            if not isinstance(state, (tuple, list)) or len(state) != len(expected):
                raise ValueError(
                    f"{type(self).__name__} state must be a tuple of {len(expected)} tensors with shapes "
                    f"{list(expected)}, got {type(state).__name__}"
                )
            given = [tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__ for s in state]
            if given != list(expected):
                raise ValueError(f"{type(self).__name__} state must have shapes {list(expected)}, got {given}")
        elif not isinstance(state, Tensor) or tuple(state.shape) != expected:
            given = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"{type(self).__name__} state must have shape {expected}, got {given}")

    def register_step_hook(self, hook: Callable[[nn.Module, Step], None]) -> RemovableHandle:
        """Call ``hook(cell, step)`` after every step of :meth:`recur`, with the step's :class:`Step` (gates
        included); ``handle.remove()`` stops it. While a hook is registered the layers run this cell on the
        reference path, stepping ``recur`` (the fast path and torch's fused kernels have no per-step tensors).
        :mod:`rnnkit.diagnostics` records gradients through time and gate statistics this way.
        """
        handle = RemovableHandle(self._step_hooks)
        self._step_hooks[handle.id] = hook
        return handle

    @property
    def has_step_hooks(self) -> bool:
        return bool(self._step_hooks)

    def _stepped(self, step: Step) -> None:
        for hook in list(self._step_hooks.values()):
            hook(self, step)

    def input_projection(self, x: Tensor, linear: Linear = F.linear) -> Tensor:  # pragma: no cover - subclasses
        raise NotImplementedError

    def recur(self, xp_t: Tensor, state: State, recurrent_mask: Tensor | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError  # pragma: no cover - defined by subclasses

    def forward(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One step: ``(h_t, state_t) = recur(input_projection(x_t), state_{t-1})``.

        Args:
            x_t: (B, D) input at step t, or (D,) for a single sequence.
            state: the previous state (see :meth:`state_shapes`), or None for zeros.
        Returns:
            ``h_t`` (B, H) and the new state.
        """
        if not isinstance(x_t, Tensor) or x_t.dim() not in (1, 2) or x_t.shape[-1] != self.input_size:
            given = tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(
                f"{type(self).__name__} expects an input of shape (B, {self.input_size}) or "
                f"({self.input_size},), got {given}"
            )
        unbatched = x_t.dim() == 1
        if unbatched:
            x_t = x_t.unsqueeze(0)  # (1, D)
            if state is not None:
                state = map_state(lambda s: s.unsqueeze(0), state)
        if state is None:
            state = self.initial_state(x_t.shape[0], dtype=x_t.dtype, device=x_t.device)
        else:
            self.check_state(state, x_t.shape[0])
        h_t, state = self.recur(self.input_projection(x_t), state)
        if unbatched:
            h_t, state = h_t.squeeze(0), map_state(lambda s: s.squeeze(0), state)
        return h_t, state

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        return text


class RNNCell(_Cell):
    r"""Elman RNN cell.

    .. math::
        h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})

    ``phi`` is tanh or ReLU (``nonlinearity``). Parameters as ``torch.nn.RNNCell``: ``weight_ih`` (H, D),
    ``weight_hh`` (H, H), ``bias_ih`` (H,), ``bias_hh`` (H,).

    ``input_projection(x) = W_ih x + b_ih + b_hh`` (every term that does not depend on the state).

    Example::

        cell = RNNCell(10, 20)
        h, state = cell(torch.randn(3, 10))        # h: (3, 20), state is h
    """

    gate_count = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {_NONLINEARITIES}, got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity
        self.reset_parameters()

    def input_projection(self, x: Tensor, linear: Linear = F.linear) -> Tensor:
        """``W_ih x + b_ih + b_hh`` for any leading dimensions: (..., D) -> (..., H)."""
        bias = self.bias_ih + self.bias_hh if self.bias else None
        return linear(x, self.weight_ih, bias)

    def recur(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``h_t = phi(xp_t + W_hh h_{t-1})``; ``recurrent_mask`` (B, H) multiplies h_{t-1} where it enters W_hh."""
        h_prev = state if recurrent_mask is None else state * recurrent_mask
        preactivation = torch.addmm(xp_t, h_prev, self.weight_hh.t())  # (B, H)
        h_t = torch.tanh(preactivation) if self.nonlinearity == "tanh" else torch.relu(preactivation)
        if self._step_hooks:
            self._stepped(Step(xp_t, state, recurrent_mask, h_t, h_t))
        return h_t, h_t

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.nonlinearity == "tanh" else text + f", nonlinearity={self.nonlinearity!r}"


class LSTMCell(_Cell):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    .. math::
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t &= f_t * c_{t-1} + i_t * g_t \\
        h_t &= o_t * \tanh(c_t)

    ``i_t`` input gate, ``f_t`` forget gate, ``g_t`` candidate cell, ``o_t`` output gate, ``c_t`` cell state.
    Gates are stacked in the order i, f, g, o: ``weight_ih`` (4H, D), ``weight_hh`` (4H, H), biases (4H,).

    ``proj_size = P > 0`` (Sak et al. 2014, LSTMP): ``h_t = W_hr (o_t * tanh(c_t))`` with ``weight_hr``
    (P, H); ``h_t`` and the recurrent input then have P features (``weight_hh`` is (4H, P)), ``c_t`` keeps H.

    ``layer_norm=True`` (Ba et al. 2016, eq. 20-22): the input and the recurrent contributions are each
    normalised over their 4H pre-activations, and the cell state before the output tanh::

        (i, f, g, o) = LN(W_ih x_t; a_ih) + LN(W_hh h_{t-1}; a_hh) + b_ih + b_hh
        h_t = o_t * tanh(LN(c_t; a_c, b_c))

    with gains ``ln_ih_weight``, ``ln_hh_weight`` (4H,) and ``ln_cell_weight``, ``ln_cell_bias`` (H,). The
    paper's shifts of the two gate normalisations are the biases b_ih and b_hh. ``c_t`` itself is carried
    un-normalised, as in the paper.

    ``forget_bias`` initialises the forget-gate bias (b_if = forget_bias, b_hf = 0, so their sum is
    forget_bias); 1.0 is the usual choice (Gers et al. 2000, Jozefowicz et al. 2015).

    ``input_projection(x) = [LN](W_ih x) + b_ih + b_hh`` (every term that does not depend on the state).

    Example::

        cell = LSTMCell(10, 20)
        h, (h, c) = cell(torch.randn(3, 10))       # h: (3, 20), c: (3, 20)
    """

    gate_count = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        proj_size: int = 0,
        layer_norm: bool = False,
        forget_bias: float | None = None,
        device=None,
        dtype=None,
    ) -> None:
        self.proj_size = check_size("proj_size", proj_size, allow_zero=True)
        if proj_size >= check_size("hidden_size", hidden_size):
            raise ValueError(f"proj_size must be smaller than hidden_size ({hidden_size}), got {proj_size}")
        if forget_bias is not None and not bias:
            raise ValueError("forget_bias needs bias=True (it initialises the forget-gate bias), got bias=False")
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.layer_norm = bool(layer_norm)
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        factory = {"device": device, "dtype": dtype}
        if proj_size > 0:
            self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size, **factory))  # (P, H)
        else:
            self.register_parameter("weight_hr", None)
        if self.layer_norm:
            self.ln_ih_weight = nn.Parameter(torch.empty(4 * hidden_size, **factory))  # (4H,)
            self.ln_hh_weight = nn.Parameter(torch.empty(4 * hidden_size, **factory))  # (4H,)
            self.ln_cell_weight = nn.Parameter(torch.empty(hidden_size, **factory))  # (H,)
            self.ln_cell_bias = nn.Parameter(torch.empty(hidden_size, **factory))  # (H,)
        self.reset_parameters()

    @property
    def recurrent_size(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def reset_parameters(self) -> None:
        """torch.nn's uniform initialisation; layer-norm gains 1 and shifts 0; then the forget bias if given."""
        super().reset_parameters()
        with torch.no_grad():
            if self.layer_norm:
                for gain in (self.ln_ih_weight, self.ln_hh_weight, self.ln_cell_weight):
                    gain.fill_(1.0)
                self.ln_cell_bias.zero_()
            if self.forget_bias is not None:
                forget = slice(self.hidden_size, 2 * self.hidden_size)
                self.bias_ih[forget] = self.forget_bias
                self.bias_hh[forget] = 0.0

    def state_shapes(self, batch_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
        return (batch_size, self.recurrent_size), (batch_size, self.hidden_size)

    def input_projection(self, x: Tensor, linear: Linear = F.linear) -> Tensor:
        """``[LN](W_ih x) + b_ih + b_hh`` for any leading dimensions: (..., D) -> (..., 4H)."""
        bias = self.bias_ih + self.bias_hh if self.bias else None
        if not self.layer_norm:
            return linear(x, self.weight_ih, bias)
        return _layer_norm(linear(x, self.weight_ih), self.ln_ih_weight, bias)  # LN(W_ih x) a_ih + b: (..., 4H)

    def gates(self, xp_t: Tensor, state: tuple[Tensor, Tensor], recurrent_mask: Tensor | None = None) -> LSTMGates:
        """The gates of one step from the hoisted input projection ``xp_t`` (B, 4H) and ``(h_{t-1}, c_{t-1})``:
        i, f, o = sigma and g = tanh of ``xp_t + W_hh h_{t-1}`` (``+ LN(W_hh h_{t-1})`` with layer norm).

        ``recurrent_mask`` (B, P or H) multiplies h_{t-1} where it enters W_hh (variational dropout).
        """
        h_prev = state[0] if recurrent_mask is None else state[0] * recurrent_mask  # (B, P or H)
        if self.layer_norm:
            preactivation = xp_t + _layer_norm(F.linear(h_prev, self.weight_hh), self.ln_hh_weight)  # (B, 4H)
        else:
            preactivation = torch.addmm(xp_t, h_prev, self.weight_hh.t())  # (B, 4H)
        # One sigmoid over all four blocks is fewer kernel launches than three; the g block is then replaced
        # by its tanh.
        input_gate, forget_gate, _, output_gate = torch.sigmoid(preactivation).chunk(4, dim=1)  # 4 x (B, H)
        candidate = torch.tanh(preactivation[:, 2 * self.hidden_size : 3 * self.hidden_size])  # g_t (B, H)
        return LSTMGates(input_gate, forget_gate, candidate, output_gate)

    def recur(
        self, xp_t: Tensor, state: tuple[Tensor, Tensor], recurrent_mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step from the hoisted input projection ``xp_t`` (B, 4H) and ``(h_{t-1}, c_{t-1})``.

        ``recurrent_mask`` (B, P or H) multiplies h_{t-1} where it enters W_hh (variational dropout).
        """
        gates = self.gates(xp_t, state, recurrent_mask)
        cell_state = torch.addcmul(gates.forget * state[1], gates.input, gates.candidate)  # c_t = f*c + i*g
        shown = _layer_norm(cell_state, self.ln_cell_weight, self.ln_cell_bias) if self.layer_norm else cell_state
        h_t = gates.output * torch.tanh(shown)  # (B, H)
        if self.proj_size > 0:
            h_t = F.linear(h_t, self.weight_hr)  # Sak et al. 2014: h_t = W_hr (o_t * tanh(c_t)), (B, P)
        if self._step_hooks:
            self._stepped(Step(xp_t, state, recurrent_mask, h_t, (h_t, cell_state), gates._asdict()))
        return h_t, (h_t, cell_state)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.layer_norm:
            text += ", layer_norm=True"
        if self.forget_bias is not None:
            text += f", forget_bias={self.forget_bias}"
        return text


class GRUCell(_Cell):
    r"""Gated recurrent unit (Cho et al. 2014), in the torch/cuDNN form or the paper's form.

    ``reset_after=True`` (torch.nn.GRUCell, cuDNN; the reset gate is applied after the matrix product)::

        r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    ``reset_after=False`` (Cho et al. 2014, eq. 5-8: h~ = tanh(W [r * h, x] + b); the reset gate is applied
    to the state before the product)::

        n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)

    ``r_t`` reset gate, ``z_t`` update gate, ``n_t`` candidate state. Gates stacked r, z, n: ``weight_ih``
    (3H, D), ``weight_hh`` (3H, H), biases (3H,); the same parameters serve both forms.

    ``layer_norm=True`` (Ba et al. 2016; blocks as in Kiros's layer-norm GRU for skip-thoughts): the input
    contribution ``W_ih x_t`` and the recurrent contribution (``W_hh h_{t-1}``, or ``[W_hr h, W_hz h]`` and
    ``W_hn (r * h)`` before the reset) are normalised separately, each in two blocks, the gates (r, z) (2H)
    and the candidate n (H), with gains ``ln_ih_weight``, ``ln_hh_weight`` (3H,); the biases follow the
    normalisation.

    ``input_projection(x) = [LN](W_ih x) + b_ih``; b_hh stays in the recurrence because b_hn sits inside the
    reset gate's product.

    Example::

        cell = GRUCell(10, 20, reset_after=False)
        h, state = cell(torch.randn(3, 10))        # h: (3, 20), state is h
    """

    gate_count = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reset_after: bool = True,
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.reset_after = bool(reset_after)
        self.layer_norm = bool(layer_norm)
        if self.layer_norm:
            factory = {"device": device, "dtype": dtype}
            self.ln_ih_weight = nn.Parameter(torch.empty(3 * hidden_size, **factory))  # (3H,)
            self.ln_hh_weight = nn.Parameter(torch.empty(3 * hidden_size, **factory))  # (3H,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's uniform initialisation; layer-norm gains 1."""
        super().reset_parameters()
        if self.layer_norm:
            with torch.no_grad():
                self.ln_ih_weight.fill_(1.0)
                self.ln_hh_weight.fill_(1.0)

    def _normalise(self, contribution: Tensor, gain: Tensor) -> Tensor:
        """LN of the (r, z) block (2H) and of the n block (H) of a (..., 3H) contribution, separately."""
        gates = 2 * self.hidden_size
        return torch.cat(
            [
                _layer_norm(contribution[..., :gates], gain[:gates]),
                _layer_norm(contribution[..., gates:], gain[gates:]),
            ],
            dim=-1,
        )  # (..., 3H)

    def input_projection(self, x: Tensor, linear: Linear = F.linear) -> Tensor:
        """``[LN](W_ih x) + b_ih`` for any leading dimensions: (..., D) -> (..., 3H)."""
        if not self.layer_norm:
            return linear(x, self.weight_ih, self.bias_ih)
        projected = self._normalise(linear(x, self.weight_ih), self.ln_ih_weight)  # (..., 3H)
        return projected if self.bias_ih is None else projected + self.bias_ih

    def _recurrent(self, h: Tensor, rows: slice, gain: slice) -> Tensor:
        """``[LN](W_h[rows] h) + b_h[rows]``: the recurrent contribution of some gate rows."""
        weight = self.weight_hh[rows]
        bias = None if self.bias_hh is None else self.bias_hh[rows]
        if not self.layer_norm:
            return F.linear(h, weight, bias)
        normalised = _layer_norm(F.linear(h, weight), self.ln_hh_weight[gain])
        return normalised if bias is None else normalised + bias

    def gates(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> GRUGates:
        """The gates of one step from the hoisted input projection ``xp_t`` (B, 3H) and ``h_{t-1}`` (B, H): r, z
        and the candidate n (see the class docstring for both forms).

        ``recurrent_mask`` (B, H) multiplies h_{t-1} where it enters W_hh (variational dropout, Gal &
        Ghahramani 2016).
        """
        hidden = self.hidden_size
        h_in = state if recurrent_mask is None else state * recurrent_mask
        if self.reset_after:
            if self.layer_norm:
                recurrent = self._normalise(F.linear(h_in, self.weight_hh), self.ln_hh_weight)  # (B, 3H)
                recurrent = recurrent if self.bias_hh is None else recurrent + self.bias_hh
            elif self.bias_hh is not None:
                recurrent = torch.addmm(self.bias_hh, h_in, self.weight_hh.t())  # (B, 3H)
            else:
                recurrent = torch.mm(h_in, self.weight_hh.t())  # (B, 3H)
            reset_gate, update_gate = torch.sigmoid(xp_t[:, : 2 * hidden] + recurrent[:, : 2 * hidden]).chunk(2, 1)
            candidate = torch.tanh(xp_t[:, 2 * hidden :] + reset_gate * recurrent[:, 2 * hidden :])  # n_t (B, H)
        else:
            gates = slice(0, 2 * hidden)
            recurrent_gates = self._recurrent(h_in, gates, gates)  # (B, 2H)
            reset_gate, update_gate = torch.sigmoid(xp_t[:, : 2 * hidden] + recurrent_gates).chunk(2, 1)
            # Cho et al. 2014, eq. 8: the reset gate acts on the state before the product.
            new = slice(2 * hidden, 3 * hidden)
            candidate = torch.tanh(xp_t[:, 2 * hidden :] + self._recurrent(reset_gate * h_in, new, new))
        return GRUGates(reset_gate, update_gate, candidate)

    def recur(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step from the hoisted input projection ``xp_t`` (B, 3H) and ``h_{t-1}`` (B, H).

        ``recurrent_mask`` (B, H) multiplies h_{t-1} where it enters W_hh (variational dropout, Gal &
        Ghahramani 2016); the interpolation ``z_t * h_{t-1}`` uses the unmasked state.
        """
        gates = self.gates(xp_t, state, recurrent_mask)
        h_t = gates.candidate + gates.update * (state - gates.candidate)  # = (1 - z_t) * n_t + z_t * h_{t-1}
        if self._step_hooks:
            self._stepped(Step(xp_t, state, recurrent_mask, h_t, h_t, gates._asdict()))
        return h_t, h_t

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if not self.reset_after:
            text += ", reset_after=False"
        if self.layer_norm:
            text += ", layer_norm=True"
        return text
