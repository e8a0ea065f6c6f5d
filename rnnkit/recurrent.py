"""Running a recurrent cell over whole sequences: :class:`Recurrent`.

The cell (``rnnkit.cells``) knows one step; everything about sequences is the layer's job (as in flax
linen): variable lengths, direction, stacking, dropout between layers, residual connections, variational
recurrent dropout and zoneout.

How a layer-direction runs, for inputs ``x`` (T, B, D) (time-major inside, whatever the caller's layout):

1. reverse each sequence's *valid prefix* for the backward direction (padding stays at the end, so the
   backward pass starts at each sequence's own last element);
2. ``xp = cell.input_projection(x)`` for all time steps at once: one (T*B, D) x (D, G*H) matrix product
   instead of T small ones;
3. loop over ``xp.unbind(0)`` calling ``cell.recur(xp_t, state)``; unbind, not ``xp[t]``, because the
   backward of T index operations each writes a full-size gradient (quadratic in T);
4. past a sequence's length the state is frozen (so the final state is the state at the sequence's own
   last valid step) and the output is 0;
5. reverse the outputs back.

Step 3 is the *reference path*. For the rnnkit cells it is replaced by the *fast path*
(:mod:`rnnkit.fast`, ``fast_path=True``, the default): the same equations for all T steps in one
autograd Function whose backward computes the weight gradients with one matrix product after the loop. Which
path each layer-direction takes is decided by :mod:`rnnkit.fast.dispatch` (zoneout, recurrent dropout in
training and step hooks keep the reference path); ``rnnkit.explain`` says which and why.

The lengths of a padded batch arrive as one :class:`rnnkit.fast.Lengths`, validated once by the public
``forward`` that received them; the masks, the reversal index and the fast path's sort order all come from it.

Initial and final states are lists with one cell state per layer-direction, in torch's order
``index = layer * num_directions + direction`` (direction 1 is the backward one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import fast
from rnnkit.cells import State
from rnnkit.checks import check_probability, check_size
from rnnkit.fast import dispatch
from rnnkit.fast.lengths import Lengths
from rnnkit.state import detach_state, hidden_of, map_state, select_rows

__all__ = ["Recurrent", "run_layers", "CellFactory", "MERGES", "check_merge"]

#: ``factory(input_size, layer, direction) -> cell`` builds the cell of one layer-direction.
CellFactory = Callable[[int, int, int], nn.Module]

#: How the two directions' outputs are merged: concatenated (torch's layout) or summed.
MERGES = ("concat", "sum")


def check_merge(merge: object) -> str:
    """``merge`` if it is one of :data:`MERGES`, else ValueError."""
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    return merge


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    """x[index[t, b], b, :] for a (T, B, F) tensor and a (T, B, 1) index (an involution for reversal)."""
    return x.gather(0, index.expand(-1, -1, x.shape[-1]))


def _run_direction(
    cell: nn.Module,
    x: Tensor,
    state: State,
    lengths: Lengths | None,
    reverse: bool,
    recurrent_mask: Tensor | None,
    zoneout: float,
    training: bool,
    fast_path: bool,
) -> tuple[Tensor, State]:
    """Run one cell over (T, B, D) inputs; return outputs (T, B, H) (not yet zeroed past lengths) and final state.

    ``reverse``: run each sequence's valid prefix backwards (a plain flip without lengths).
    """
    if reverse:
        x = x.flip(0) if lengths is None else _gather_time(x, lengths.reverse_index)
    choice = dispatch.cell_path(cell, fast_path=fast_path, recurrent_dropout=recurrent_mask is not None,
                                zoneout=zoneout)
    if choice.path == "fast":
        output, state = fast.run(cell, fast.input_projection(cell, x), state, lengths)
    else:
        valid = None if lengths is None else lengths.valid
        project = getattr(cell, "input_projection", None)
        if project is not None:
            xp = project(x)  # (T, B, G*H): every step's input contribution in one matrix product
            output, state = _step_loop(cell.recur, xp, state, valid, recurrent_mask, zoneout, training)
        else:  # any module with the cell contract h_t, state = cell(x_t, state)
            output, state = _step_loop(cell, x, state, valid, recurrent_mask, zoneout, training)
    if reverse:
        output = output.flip(0) if lengths is None else _gather_time(output, lengths.reverse_index)
    return output, state


def _step_loop(
    step,
    xp: Tensor,
    state: State,
    valid: Tensor | None,
    recurrent_mask: Tensor | None,
    zoneout: float,
    training: bool,
) -> tuple[Tensor, State]:
    """The reference path: ``step(xp_t, state)`` once per time step, recorded by autograd step by step."""
    valid_per_step = None if valid is None else valid.unbind(0)  # one (B, 1) per step
    outputs = []
    for t, xp_t in enumerate(xp.unbind(0)):
        if recurrent_mask is None:
            h_t, new_state = step(xp_t, state)
        else:
            h_t, new_state = step(xp_t, state, recurrent_mask)
        if zoneout > 0.0:
            # Krueger et al. 2017, eq. 3: each unit keeps its previous value with probability p; at test
            # time the expectation p * old + (1 - p) * new.
            if training:
                new_state = map_state(lambda new, old: torch.where(torch.rand_like(new) < zoneout, old, new),
                                      new_state, state)
            else:
                new_state = map_state(lambda new, old: torch.lerp(new, old, zoneout), new_state, state)
            h_t = hidden_of(new_state)
        if valid_per_step is not None:
            # Past its length a sequence keeps its state, so the final state is the one at its own end.
            new_state = map_state(lambda new, old, v=valid_per_step[t]: torch.where(v, new, old), new_state, state)
        state = new_state
        outputs.append(h_t)
    return torch.stack(outputs), state  # (T, B, H)


def run_layers(
    cells: Sequence[nn.Module],
    x: Tensor,
    states: Sequence[State],
    lengths: Lengths | None = None,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    merge: str = "concat",
    dropout: float = 0.0,
    residual: bool = False,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    training: bool = False,
    fast_path: bool = True,
) -> tuple[Tensor, list[State]]:
    """Run stacked (bi)directional cells over a time-major batch; the engine behind :class:`Recurrent`.

    Args:
        cells: one cell per layer-direction, index ``layer * num_directions + direction``.
        x: (T, B, D) inputs.
        states: one initial cell state per layer-direction.
        lengths: the batch's :class:`rnnkit.fast.Lengths` (built and checked by the caller), or None (all T).
        fast_path: run the rnnkit cells on the fast path where it applies (False: the reference path, the
            cells' ``recur`` stepped with autograd; the tests compare the two).
        Other arguments as in :class:`Recurrent`.
    Returns:
        outputs (T, B, H_out), 0 past each length, and the final state of every layer-direction.
    """
    num_directions = 2 if bidirectional else 1
    batch_size = x.shape[1]
    masked = recurrent_dropout > 0.0 and training
    order = None
    if lengths is not None and lengths.order is not None and not (training and dropout > 0.0) and all(
        dispatch.cell_path(cell, fast_path=fast_path, recurrent_dropout=masked, zoneout=zoneout).path == "fast"
        for cell in cells
    ):
        # The fast path runs a batch longest first: sort it once here, rather than each layer-direction its own
        # input projection, state and outputs. Only where every layer-direction takes the fast path, and not
        # with dropout between layers, whose draws would fall on other sequences than on the reference path.
        order = lengths.order
        x, states, lengths = x.index_select(1, order), [select_rows(s, order) for s in states], lengths.sorted()
    layer_input = x
    finals: list[State] = []
    for layer in range(num_layers):
        direction_outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            mask = None
            if masked:
                # Gal & Ghahramani 2016: one dropout mask per sequence, reused at every time step.
                hidden = hidden_of(states[index])
                keep = 1.0 - recurrent_dropout
                mask = hidden.new_empty(batch_size, hidden.shape[-1]).bernoulli_(keep) / keep  # (B, H)
            output, final = _run_direction(cells[index], layer_input, states[index], lengths, direction == 1, mask,
                                           zoneout, training, fast_path)
            direction_outputs.append(output)
            finals.append(final)
        if num_directions == 1:
            output = direction_outputs[0]  # (T, B, H)
        elif merge == "concat":
            output = torch.cat(direction_outputs, dim=-1)  # (T, B, 2H)
        else:
            output = direction_outputs[0] + direction_outputs[1]  # (T, B, H)
        if lengths is not None:
            output = output.masked_fill(~lengths.valid, 0.0)  # outputs past a length are 0
        if residual and layer > 0 and output.shape[-1] == layer_input.shape[-1]:
            output = output + layer_input  # Wu et al. 2016 (GNMT): residual connections between layers
        if dropout > 0.0 and training and layer < num_layers - 1:
            output = F.dropout(output, dropout, training=True)  # between layers, as torch.nn: not on the last
        layer_input = output
    if order is not None:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(batch_size, device=order.device)
        layer_input = layer_input.index_select(1, inverse)
        finals = [select_rows(final, inverse) for final in finals]
    return layer_input, finals


class Recurrent(nn.Module):
    r"""Run any cell over (B, T, D) batches: lengths, layers, directions, dropout, residual, zoneout.

    Args:
        cell: a cell module (one layer, one direction), a sequence of cells (one per layer-direction, index
            ``layer * num_directions + direction``), or a factory ``factory(input_size, layer, direction)``
            returning the cell of a layer-direction. A cell follows the contract
            ``h_t, state = cell(x_t, state)``; rnnkit cells also provide ``input_projection``/``recur``,
            which lets the input projection of all steps be one matrix product.
        input_size: D, the input width; needed with a factory, else read from the first cell.
        num_layers: stacked layers; layer l > 0 reads layer l-1's (merged) outputs.
        bidirectional: add a backward direction per layer; it reads each sequence's valid prefix reversed.
        merge: ``"concat"`` (outputs 2H, torch's layout) or ``"sum"`` (H) for the two directions.
        dropout: dropout on the outputs of every layer but the last (between layers, not across time).
        residual: add each layer's input to its output for layers l > 0 whose input and output widths are
            equal (Wu et al. 2016); the first layer's input is not a recurrent output and gets none.
        recurrent_dropout: variational dropout of h_{t-1} where it enters W_hh, one mask per sequence for
            all steps (Gal & Ghahramani 2016); cells must accept ``recur(xp_t, state, recurrent_mask)``.
        zoneout: probability that each state unit keeps its previous value at a step (Krueger et al. 2017);
            at evaluation the state is the expectation ``p * h_{t-1} + (1 - p) * h_t``.
        batch_first: inputs/outputs are (B, T, D) (default) or (T, B, D).
        stateful: keep the final state on the module (``self.state``) and start the next call from it when no
            state is given. For truncated BPTT call :meth:`detach_state` between chunks (it keeps the values
            and cuts the graph) and :meth:`reset_state` between independent sequences. Without ``stateful``,
            pass states yourself and cut them with :func:`detach_state`.
        fast_path: run rnnkit cells (except with zoneout, or recurrent dropout in training) through
            :mod:`rnnkit.fast`: the same equations, one autograd Function for all steps. False steps the
            cells' ``recur`` with autograd (the reference path; slower, same results).

    Shapes: ``forward(x, state=None, lengths=None) -> (output, final_state)`` with x (B, T, D), lengths (B,)
    in [1, T], output (B, T, H_out) with zeros past each length, and states as lists of one cell state per
    layer-direction; the final state of a sequence is the one at its own last valid step.

    Example::

        rnn = Recurrent(lambda d, layer, direction: LSTMCell(d, 64, layer_norm=True), input_size=32,
                        num_layers=2, bidirectional=True)
        output, states = rnn(torch.randn(8, 20, 32), lengths=torch.randint(1, 21, (8,)))  # (8, 20, 128)
    """

    def __init__(
        self,
        cell: nn.Module | Sequence[nn.Module] | CellFactory,
        input_size: int | None = None,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: str = "concat",
        dropout: float = 0.0,
        residual: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        batch_first: bool = True,
        stateful: bool = False,
        fast_path: bool = True,
    ) -> None:
        super().__init__()
        self.num_layers = check_size("num_layers", num_layers)
        self.bidirectional = bool(bidirectional)
        self.merge = check_merge(merge)
        self.dropout = check_probability("dropout", dropout)
        self.residual = bool(residual)
        self.recurrent_dropout = check_probability("recurrent_dropout", recurrent_dropout)
        self.zoneout = check_probability("zoneout", zoneout)
        self.batch_first = bool(batch_first)
        self.stateful = bool(stateful)
        self.fast_path = bool(fast_path)
        self.state: list[State] | None = None
        num_directions = 2 if bidirectional else 1
        count = self.num_layers * num_directions
        if isinstance(cell, nn.Module) and not isinstance(cell, nn.ModuleList):
            if count != 1:
                raise ValueError(
                    f"a single cell serves one layer and one direction; for num_layers={num_layers}, "
                    f"bidirectional={bidirectional} pass {count} cells or a factory"
                )
            cells = [cell]
        elif isinstance(cell, (Sequence, nn.ModuleList)) and not isinstance(cell, str):
            cells = list(cell)
            if len(cells) != count:
                raise ValueError(f"expected {count} cells (num_layers x directions), got {len(cells)}")
        elif callable(cell):
            if input_size is None:
                raise ValueError("input_size is needed to build cells with a factory, got None")
            cells = []
            width = check_size("input_size", input_size)
            for layer in range(self.num_layers):
                for direction in range(num_directions):
                    cells.append(cell(width, layer, direction))
                out = _output_size(cells[-1])
                width = out * num_directions if merge == "concat" else out
        else:
            raise ValueError(f"cell must be a cell module, a list of cells or a factory, got {type(cell).__name__}")
        self.cells = nn.ModuleList(cells)
        self.input_size = getattr(cells[0], "input_size", input_size)
        if self.recurrent_dropout > 0.0:
            for c in cells:
                if not hasattr(c, "recur"):
                    raise ValueError(
                        f"recurrent_dropout needs cells with recur(xp_t, state, recurrent_mask); "
                        f"{type(c).__name__} has none"
                    )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def forward(
        self, x: Tensor, state: Sequence[State] | None = None, lengths: Tensor | Sequence[int] | None = None
    ) -> tuple[Tensor, list[State]]:
        """Run the layers; see the class docstring for shapes."""
        if dispatch.breaks_graph():  # torch.compile runs the module as eager mode does (a graph break)
            return dispatch.run_eagerly(self._forward, x, state, lengths)
        return self._forward(x, state, lengths)

    def _forward(self, x: Tensor, state: Sequence[State] | None, lengths) -> tuple[Tensor, list[State]]:
        layout = "(B, T, D)" if self.batch_first else "(T, B, D)"
        if not isinstance(x, Tensor) or x.dim() != 3:
            given = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"Recurrent expects a 3-D input {layout}, got {given}")
        if self.input_size is not None and x.shape[-1] != self.input_size:
            raise ValueError(f"Recurrent expects {self.input_size} input features, got {x.shape[-1]}")
        x = x.transpose(0, 1) if self.batch_first else x  # (T, B, D)
        max_length, batch_size = x.shape[0], x.shape[1]
        if lengths is not None:
            lengths = Lengths.of(lengths, batch_size, max_length, x.device)
        if state is None and self.stateful and self.state is not None:
            stored = hidden_of(self.state[0]).shape[0]
            if stored != batch_size:
                raise ValueError(
                    f"the stored state (stateful=True) is for a batch of {stored} sequences, got {batch_size}; "
                    "call reset_state() to start new sequences"
                )
            state = self.state
        states = self._initial_states(state, batch_size, x)
        output, finals = run_layers(
            list(self.cells),
            x,
            states,
            lengths,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            merge=self.merge,
            dropout=self.dropout,
            residual=self.residual,
            recurrent_dropout=self.recurrent_dropout,
            zoneout=self.zoneout,
            training=self.training,
            fast_path=self.fast_path,
        )
        if self.stateful:
            self.state = finals
        return (output.transpose(0, 1) if self.batch_first else output), finals

    def _initial_states(self, state, batch_size: int, x: Tensor) -> list[State]:
        if state is None:
            return [_zero_state(c, batch_size, x) for c in self.cells]
        if not isinstance(state, (list, tuple)) or len(state) != len(self.cells):
            raise ValueError(
                f"state must be a list of {len(self.cells)} cell states (one per layer-direction), "
                f"got {type(state).__name__}" + (f" of length {len(state)}" if isinstance(state, (list, tuple)) else "")
            )
        for c, s in zip(self.cells, state, strict=True):
            if hasattr(c, "check_state"):
                c.check_state(s, batch_size)
        return list(state)

    def detach_state(self) -> None:
        """Cut the graph behind the stored state (truncated BPTT), keeping its values; needs ``stateful``."""
        self.state = detach_state(self.state)

    def reset_state(self) -> None:
        """Forget the stored state: the next call starts from zeros."""
        self.state = None

    def extra_repr(self) -> str:
        parts = []
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if self.bidirectional:
            parts.append("bidirectional=True")
        if self.merge != "concat":
            parts.append(f"merge={self.merge!r}")
        for name in ("dropout", "recurrent_dropout", "zoneout"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        if self.residual:
            parts.append("residual=True")
        if not self.batch_first:
            parts.append("batch_first=False")
        if self.stateful:
            parts.append("stateful=True")
        if not self.fast_path:
            parts.append("fast_path=False")
        return ", ".join(parts)


def _zero_state(cell: nn.Module, batch_size: int, x: Tensor) -> State:
    """The cell's zero state; a (B, output_size) zero tensor for cells without ``initial_state``."""
    if hasattr(cell, "initial_state"):
        return cell.initial_state(batch_size, dtype=x.dtype, device=x.device)
    return x.new_zeros(batch_size, _output_size(cell))


def _output_size(cell: nn.Module) -> int:
    for name in ("output_size", "hidden_size"):
        size = getattr(cell, name, None)
        if isinstance(size, int):
            return size
    raise ValueError(f"cannot tell the output width of {type(cell).__name__}: give it output_size or hidden_size")
