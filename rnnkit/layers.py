"""Drop-in replacements for ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``.

Same constructor arguments, same parameter names and shapes (``weight_ih_l0``, ``weight_hh_l0_reverse``,
``weight_hr_l0``, ...), so ``load_state_dict`` works both ways with torch's modules, the same forward
signature and outputs (tensor or ``PackedSequence``, unbatched 2-D input, hidden states laid out
(num_layers * num_directions, B, H) whatever ``batch_first`` says), plus:

* ``lengths=`` for padded batches: outputs past a length are 0 and the final states are each sequence's
  state at its own last step;
* extras the fused kernels do not have: ``layer_norm``, ``residual``, ``recurrent_dropout``, ``zoneout``,
  ``forget_bias`` (LSTM), ``reset_after=False`` (GRU, Cho et al. 2014), ``merge="sum"``.

Two paths compute the same function:

* **fused**: where torch has a kernel for the exact configuration (standard cells and none of the extras) the
  layer calls it (``torch._VF.lstm``/``gru``/``rnn_tanh``/``rnn_relu``, as ``torch.nn.RNNBase.forward`` does)
  with the module's own parameters, no copy per call; ``lengths=`` is handled by packing internally;
* **own**: :func:`rnnkit.recurrent.run_layers` over the rnnkit cells (``rnnkit.cells``), with the input
  projection of all time steps hoisted into one matrix product and the recurrence of each layer-direction
  run by rnnkit's fast path (:mod:`rnnkit.fast`: one autograd Function per sequence whose backward computes the
  weight gradients with one matrix product), or, with ``use_fast_path=False``, by stepping the cells' ``recur``
  with autograd (the reference path).

``use_fused`` chooses: ``"auto"`` (default) takes torch's kernel where it applies except where the own path
was measured faster, ``True`` takes torch's kernel wherever it applies, ``False`` never; the rule is
:func:`rnnkit.fast.dispatch.layer_path`, and ``rnnkit.explain(layer, x)`` says which path a call takes and why.
The tests check that all paths agree with each other and with torch.nn.

The parameters live on the layer under torch's names; the cells of the own path are bound to them at each
call, so there is one set of parameters and one definition of each cell's math.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.cells import GRUCell, LSTMCell, RNNCell, State
from rnnkit.checks import check_bool, check_probability, check_size
from rnnkit.fast import dispatch
from rnnkit.fast.lengths import Lengths
from rnnkit.recurrent import check_merge, run_layers
from rnnkit.state import map_state

__all__ = ["LSTM", "GRU", "RNN", "RecurrentLayer"]

_FUSED_KERNELS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}
# The parameters torch's kernels take, in torch's order for each layer-direction.
_KERNEL_PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


class RecurrentLayer(nn.Module):
    """What LSTM, GRU and RNN share: parameters under torch's names, argument checks, the two paths. Other
    modules recognise rnnkit's drop-in layers by this class (diagnostics, parameter counts, export)."""

    mode: str = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        proj_size: int,
        device,
        dtype,
        *,
        merge: str,
        residual: bool,
        recurrent_dropout: float,
        zoneout: float,
        use_fused: bool | str,
        use_fast_path: bool,
        make_cell,
    ) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.dropout = check_probability("dropout", dropout)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.proj_size = check_size("proj_size", proj_size, allow_zero=True)
        self.merge = check_merge(merge)
        self.residual = bool(residual)
        self.recurrent_dropout = check_probability("recurrent_dropout", recurrent_dropout)
        self.zoneout = check_probability("zoneout", zoneout)
        if not (use_fused == "auto" or isinstance(use_fused, bool)):
            raise ValueError(f"use_fused must be True, False or 'auto', got {use_fused!r}")
        self.use_fused = use_fused
        self.use_fast_path = bool(use_fast_path)
        if self.dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout acts between recurrent layers (after all but the last), so non-zero dropout expects "
                f"num_layers greater than 1, got dropout={dropout} and num_layers={num_layers}",
                stacklevel=3,
            )
        output_width = proj_size if proj_size > 0 else hidden_size
        num_directions = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        cells, bindings, flat_names, all_weights = [], [], [], []
        for layer in range(num_layers):
            if layer == 0:
                width = input_size
            else:
                width = output_width * num_directions if merge == "concat" else output_width
            for direction in range(num_directions):
                cell = make_cell(width, **factory)
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                binding = []
                for name, parameter in cell.named_parameters(recurse=False):
                    self.register_parameter(name + suffix, parameter)
                    binding.append((name, name + suffix))
                kernel_names = [name + suffix for name in _KERNEL_PARAMETERS if getattr(cell, name, None) is not None]
                cells.append(cell)
                bindings.append(binding)
                flat_names.extend(kernel_names)
                all_weights.append(kernel_names)
        # Plain lists, not submodules: the parameters are registered once, on the layer, under torch's names.
        self._cells = cells
        self._bindings = bindings
        self._flat_weights_names = flat_names
        self._all_weights = all_weights

    # -- torch.nn.RNNBase compatibility -------------------------------------------------------------------

    @property
    def _flat_weights(self) -> list[Tensor]:
        """The parameters in the order torch's kernels take them (looked up at each call: never stale)."""
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op kept for compatibility (torch uses it to pack weights for cuDNN)."""

    def reset_parameters(self) -> None:
        """Initialise like torch.nn (uniform in +-1/sqrt(H)), plus the cells' extras (layer norm, forget bias)."""
        for cell in self.cells:
            cell.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def cells(self) -> list[nn.Module]:
        """The cell of each layer-direction (index layer * num_directions + direction), bound to the current
        parameters: running them step by step computes what the layer computes (used by diagnostics)."""
        for cell, binding in zip(self._cells, self._bindings, strict=True):
            for cell_name, layer_name in binding:
                # Look the parameter up at each call so that .to(), load_state_dict(assign=True) and
                # torch.func.functional_call, which may replace it, are always seen.
                cell._parameters[cell_name] = getattr(self, layer_name)
        return self._cells

    def uses_fused_kernel(self, *, grad: bool | None = None, variable_lengths: bool = False) -> bool:
        """Whether a call in the current mode runs torch's fused kernel (else rnnkit's own path); the rule is
        :func:`rnnkit.fast.dispatch.layer_path`, and ``rnnkit.explain(layer, x)`` gives its reasons.

        Args:
            grad: whether the call records gradients; None: ``torch.is_grad_enabled()`` and some parameter
                requires grad.
            variable_lengths: whether the call has ``lengths=`` (not all T) or a PackedSequence.
        """
        if grad is None:
            grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        return dispatch.layer_path(self, grad=grad, variable_lengths=variable_lengths).path == "fused"

    # -- forward ------------------------------------------------------------------------------------------

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Tensor | tuple[Tensor, Tensor] | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, Tensor | tuple[Tensor, Tensor]]:
        """Run the layer like torch.nn; see the class docstring for shapes.

        Args:
            input: (T, B, D), or (B, T, D) with ``batch_first``, or (T, D) unbatched, or a PackedSequence.
            hx: initial state(s) (num_layers * num_directions, B, H) (LSTM: a pair (h_0, c_0)), or None.
            lengths: (B,) lengths of the sequences of a padded tensor input, each in [1, T].
        Returns:
            ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``); output is a PackedSequence if input is one.
        """
        if dispatch.breaks_graph():  # torch.compile runs the layer as eager mode does (a graph break)
            return dispatch.run_eagerly(self._forward, input, hx, lengths)
        return self._forward(input, hx, lengths)

    def _forward(self, input: Tensor | PackedSequence, hx, lengths):
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths= is for padded tensors; a PackedSequence carries its own lengths")
            data, batch_sizes, sorted_indices, unsorted_indices = input
            self._check_input(data, 2, "a PackedSequence with (N, D) data")
            batch_size = int(batch_sizes[0])
            fused = self.uses_fused_kernel(grad=self._records_gradients(data, hx), variable_lengths=True)
            hx = self._check_hidden(hx, batch_size, batched=True, dtype=data.dtype, device=data.device)
            if fused:
                hx = _permute(hx, sorted_indices)
                output, hidden = self._run_fused(data, hx, batch_sizes)
                return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), _permute(
                    hidden, unsorted_indices
                )
            padded, sequence_lengths = pad_packed_sequence(input)  # (T, B, D), batch in the caller's order
            output, hidden = self._run_own(padded, hx, Lengths.of(sequence_lengths, batch_size, padded.shape[0],
                                                                  padded.device))
            return _pack_like(output, input), hidden

        layout = "(B, T, D)" if self.batch_first else "(T, B, D)"
        self._check_input(input, (2, 3), f"a 3-D input {layout} or a 2-D unbatched input (T, D)")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
            if isinstance(lengths, int) or (isinstance(lengths, Tensor) and lengths.dim() == 0):
                lengths = torch.as_tensor(lengths).reshape(1)
        batch_size, max_length = input.shape[batch_dim], input.shape[1 - batch_dim]
        if hx is not None and not batched:
            hx = map_state(lambda h: h.unsqueeze(1), self._check_hidden(hx, 1, batched=False))
        hx = self._check_hidden(hx, batch_size, batched=True, dtype=input.dtype, device=input.device)
        if lengths is not None:
            lengths = Lengths.of(lengths, batch_size, max_length, input.device)  # None: nothing is padded
        fused = self.uses_fused_kernel(grad=self._records_gradients(input, hx), variable_lengths=lengths is not None)
        if fused and lengths is None:
            output, hidden = self._run_fused(input, hx, None)
        elif fused:
            # torch's kernels take variable lengths as a PackedSequence.
            packed = pack_padded_sequence(input, lengths.lengths, batch_first=self.batch_first,
                                          enforce_sorted=False)
            packed_output, hidden = self._run_fused(packed.data, _permute(hx, packed.sorted_indices),
                                                    packed.batch_sizes)
            packed_output = PackedSequence(packed_output, packed.batch_sizes, packed.sorted_indices,
                                           packed.unsorted_indices)
            output, _ = pad_packed_sequence(packed_output, batch_first=self.batch_first, total_length=max_length)
            hidden = _permute(hidden, packed.unsorted_indices)
        else:
            time_major = input.transpose(0, 1) if self.batch_first else input  # (T, B, D)
            output, hidden = self._run_own(time_major, hx, lengths)
            output = output.transpose(0, 1) if self.batch_first else output
        if not batched:
            output = output.squeeze(batch_dim)
            hidden = map_state(lambda h: h.squeeze(1), hidden)
        return output, hidden

    def _records_gradients(self, input: Tensor, hx) -> bool:
        """Whether autograd records this call: grad mode on and the input, a state or a parameter requires grad."""
        if not torch.is_grad_enabled():
            return False
        states = [] if hx is None else list(hx) if isinstance(hx, (tuple, list)) else [hx]
        return any(t.requires_grad for t in [input, *states]) or any(p.requires_grad for p in self.parameters())

    def _run_fused(self, input: Tensor, hx, batch_sizes: Tensor | None):
        """Call torch's kernel with the module's own parameters, exactly as torch.nn.RNNBase.forward does."""
        kernel = _FUSED_KERNELS[self.mode]
        if batch_sizes is None:
            result = kernel(input, hx, self._flat_weights, self.bias, self.num_layers, self.dropout,
                            self.training, self.bidirectional, self.batch_first)
        else:
            result = kernel(input, batch_sizes, hx, self._flat_weights, self.bias, self.num_layers,
                            self.dropout, self.training, self.bidirectional)
        hidden = tuple(result[1:]) if self.mode == "LSTM" else result[1]
        return result[0], hidden

    def _run_own(self, input: Tensor, hx, lengths: Lengths | None):
        """rnnkit's path: ``run_layers`` over the cells; input (T, B, D), hx in torch's stacked layout."""
        cells = self.cells
        if self.mode == "LSTM":
            states: list[State] = list(zip(hx[0].unbind(0), hx[1].unbind(0), strict=True))
        else:
            states = list(hx.unbind(0))
        output, finals = run_layers(
            cells,
            input,
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
            fast_path=self.use_fast_path,
        )
        if self.mode == "LSTM":
            hidden = (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))  # 2 x (L*D, B, .)
        else:
            hidden = torch.stack(finals)  # (L*D, B, H)
        return output, hidden

    # -- argument checks ----------------------------------------------------------------------------------

    def _check_input(self, input, dims, expected: str) -> None:
        dims = (dims,) if isinstance(dims, int) else dims
        if not isinstance(input, Tensor) or input.dim() not in dims:
            given = f"{input.dim()}-D shape {tuple(input.shape)}" if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{type(self).__name__} expects {expected}, got {given}")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects {self.input_size} input features (input_size), "
                f"got {input.shape[-1]} (input shape {tuple(input.shape)})"
            )
        weight = self.weight_ih_l0
        if input.dtype != weight.dtype:
            raise ValueError(
                f"{type(self).__name__} input dtype must match the weights' ({weight.dtype}), got {input.dtype}"
            )

    def _hidden_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        output_width = self.proj_size if self.proj_size > 0 else self.hidden_size
        layers = self.num_layers * self.num_directions
        return [(layers, batch_size, output_width)]

    def _check_hidden(self, hx, batch_size: int, *, batched: bool, dtype=None, device=None):
        """Check a given initial state against torch's layout, or return zeros."""
        shapes = self._hidden_shapes(batch_size)
        if hx is None:
            tensors = [torch.zeros(shape, dtype=dtype, device=device) for shape in shapes]
            return tuple(tensors) if len(shapes) > 1 else tensors[0]
        expected = [shape if batched else (shape[0], shape[2]) for shape in shapes]
        tensors = list(hx) if len(shapes) > 1 and isinstance(hx, (tuple, list)) else [hx]
        names = ["h_0", "c_0"][: len(shapes)]
        if len(tensors) != len(shapes) or not all(isinstance(t, Tensor) for t in tensors):
            raise ValueError(
                f"{type(self).__name__} expects hx as " + ("a pair (h_0, c_0)" if len(shapes) > 1 else "a tensor")
                + f" of shapes {expected}, got {type(hx).__name__}"
            )
        for name, tensor, shape in zip(names, tensors, expected, strict=True):
            if tuple(tensor.shape) != shape:
                layout = "(num_layers * num_directions, B, H)" if batched else "(num_layers * num_directions, H)"
                raise ValueError(
                    f"{type(self).__name__} expects {name} of shape {shape} {layout}, got {tuple(tensor.shape)}"
                )
        return tuple(tensors) if len(shapes) > 1 else tensors[0]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        if self.merge != "concat":
            text += f", merge={self.merge!r}"
        if self.residual:
            text += ", residual=True"
        for name in ("recurrent_dropout", "zoneout"):
            if getattr(self, name):
                text += f", {name}={getattr(self, name)}"
        if self.use_fused != "auto":
            text += f", use_fused={self.use_fused}"
        if not self.use_fast_path:
            text += ", use_fast_path=False"
        return text


def _permute(hidden, permutation: Tensor | None):
    """Reorder the batch dimension (1) of hidden states, as torch.nn does for packed sequences."""
    if permutation is None:
        return hidden
    return map_state(lambda h: h.index_select(1, permutation), hidden)


def _pack_like(output: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack a (T, B, H) output (batch in the caller's order) with the same layout as ``like``."""
    batch_sizes = like.batch_sizes
    if like.sorted_indices is not None:
        output = output.index_select(1, like.sorted_indices.to(output.device))  # batch in packing order
    batch_size = int(batch_sizes[0])
    # Sorted lengths from batch_sizes: sequence b is present at the steps where batch_sizes[t] > b.
    sorted_lengths = (batch_sizes.unsqueeze(0) > torch.arange(batch_size).unsqueeze(1)).sum(1)  # (B,)
    data = pack_padded_sequence(output, sorted_lengths, enforce_sorted=True).data
    return PackedSequence(data, batch_sizes, like.sorted_indices, like.unsorted_indices)


class LSTM(RecurrentLayer):
    r"""Multi-layer LSTM, a drop-in for ``torch.nn.LSTM`` (same arguments, parameters, inputs and outputs).

    Each layer-direction computes, for every step t (gates i, f, g, o; see :class:`rnnkit.LSTMCell`)::

        i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
        f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)       candidate cell
        o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
        c_t = f_t * c_{t-1} + i_t * g_t                         cell state
        h_t = o_t * tanh(c_t)                                   hidden state (W_hr (o_t * tanh(c_t)) if proj_size)

    x_t of layer l > 0 is the previous layer's h_t (both directions concatenated), with dropout in training.

    Args (torch's): input_size D, hidden_size H, num_layers, bias, batch_first, dropout (between layers),
    bidirectional, proj_size P (Sak et al. 2014), device, dtype.
    Extras (keyword-only; defaults keep torch's behaviour): layer_norm (Ba et al. 2016), residual (between
    layers, Wu et al. 2016), recurrent_dropout (Gal & Ghahramani 2016), zoneout (Krueger et al. 2017),
    forget_bias (initial forget-gate bias), merge ("concat" or "sum" of the two directions), use_fused
    ("auto", True: torch's kernel wherever it applies, False: rnnkit's own path; see the module docstring),
    use_fast_path (False: the own path steps the cells with autograd, the reference the tests compare with).

    Shapes: input (T, B, D) ((B, T, D) if batch_first; (T, D) unbatched; or a PackedSequence); h_0, h_n
    (num_layers * num_directions, B, P or H); c_0, c_n (num_layers * num_directions, B, H); output
    (T, B, num_directions * (P or H)).

    Example::

        lstm = rnnkit.LSTM(10, 20, num_layers=2, batch_first=True)
        lstm.load_state_dict(torch.nn.LSTM(10, 20, num_layers=2, batch_first=True).state_dict())
        output, (h_n, c_n) = lstm(torch.randn(3, 5, 10), lengths=torch.tensor([5, 2, 4]))
    """

    mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        layer_norm: bool = False,
        residual: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        forget_bias: float | None = None,
        merge: str = "concat",
        use_fused: bool | str = "auto",
        use_fast_path: bool = True,
    ) -> None:
        self.layer_norm = bool(layer_norm)  # proj_size is checked by the cells (LSTMCell)
        self.forget_bias = forget_bias

        def make_cell(width: int, **factory) -> LSTMCell:
            return LSTMCell(width, hidden_size, bias, proj_size, layer_norm, forget_bias, **factory)

        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size, device,
            dtype, merge=merge, residual=residual, recurrent_dropout=recurrent_dropout, zoneout=zoneout,
            use_fused=use_fused, use_fast_path=use_fast_path, make_cell=make_cell,
        )

    def _hidden_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        layers = self.num_layers * self.num_directions
        return super()._hidden_shapes(batch_size) + [(layers, batch_size, self.hidden_size)]

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.layer_norm:
            text += ", layer_norm=True"
        if self.forget_bias is not None:
            text += f", forget_bias={self.forget_bias}"
        return text


class GRU(RecurrentLayer):
    r"""Multi-layer GRU, a drop-in for ``torch.nn.GRU`` (same arguments, parameters, inputs and outputs).

    Each layer-direction computes, for every step t (gates r, z, n; see :class:`rnnkit.GRUCell`)::

        r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)        reset gate
        z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)        update gate
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))  candidate (reset_after=True, torch/cuDNN)
        n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)  candidate (reset_after=False, Cho et al. 2014)
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    Args (torch's): input_size D, hidden_size H, num_layers, bias, batch_first, dropout, bidirectional,
    device, dtype. Extras (keyword-only): reset_after, layer_norm, residual, recurrent_dropout, zoneout,
    merge, use_fused, use_fast_path (see :class:`LSTM`).

    Shapes: input (T, B, D) ((B, T, D) if batch_first; (T, D) unbatched; or a PackedSequence); h_0, h_n
    (num_layers * num_directions, B, H); output (T, B, num_directions * H).

    Example::

        gru = rnnkit.GRU(10, 20, bidirectional=True, reset_after=False)
        output, h_n = gru(torch.randn(5, 3, 10))   # (5, 3, 40), (2, 3, 20)
    """

    mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        reset_after: bool = True,
        layer_norm: bool = False,
        residual: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        merge: str = "concat",
        use_fused: bool | str = "auto",
        use_fast_path: bool = True,
    ) -> None:
        self.reset_after = bool(reset_after)
        self.layer_norm = bool(layer_norm)

        def make_cell(width: int, **factory) -> GRUCell:
            return GRUCell(width, hidden_size, bias, reset_after, layer_norm, **factory)

        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype,
            merge=merge, residual=residual, recurrent_dropout=recurrent_dropout, zoneout=zoneout,
            use_fused=use_fused, use_fast_path=use_fast_path, make_cell=make_cell,
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if not self.reset_after:
            text += ", reset_after=False"
        if self.layer_norm:
            text += ", layer_norm=True"
        return text


class RNN(RecurrentLayer):
    r"""Multi-layer Elman RNN, a drop-in for ``torch.nn.RNN`` (same arguments, parameters, inputs and outputs).

    Each layer-direction computes ``h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with phi = tanh or
    ReLU (``nonlinearity``); see :class:`rnnkit.RNNCell`.

    Args (torch's): input_size D, hidden_size H, num_layers, nonlinearity, bias, batch_first, dropout,
    bidirectional, device, dtype. Extras (keyword-only): residual, recurrent_dropout, zoneout, merge,
    use_fused, use_fast_path (see :class:`LSTM`).

    Shapes: input (T, B, D) ((B, T, D) if batch_first; (T, D) unbatched; or a PackedSequence); h_0, h_n
    (num_layers * num_directions, B, H); output (T, B, num_directions * H).

    Example::

        rnn = rnnkit.RNN(10, 20, nonlinearity="relu")
        output, h_n = rnn(torch.randn(5, 3, 10))   # (5, 3, 20), (1, 3, 20)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        residual: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        merge: str = "concat",
        use_fused: bool | str = "auto",
        use_fast_path: bool = True,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"

        def make_cell(width: int, **factory) -> RNNCell:
            return RNNCell(width, hidden_size, bias, nonlinearity, **factory)

        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype,
            merge=merge, residual=residual, recurrent_dropout=recurrent_dropout, zoneout=zoneout,
            use_fused=use_fused, use_fast_path=use_fast_path, make_cell=make_cell,
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.nonlinearity != "tanh":
            text += f", nonlinearity={self.nonlinearity!r}"
        return text
