"""ONNX export of trained models: the language-model step, the classifier, the tagger, the seq2seq encoder and
the decoder step, with dynamic batch and time axes and variable lengths.

Why not trace the layers as they are: tracing a Python loop over time unrolls it to the example's length T,
and torch's kernels take variable lengths as a PackedSequence, which the exporter cannot follow. ONNX has the
recurrent layers as operators (``LSTM``, ``GRU``, ``RNN``, ONNX operator spec) that run over any T and take
``sequence_lens`` (B,): outputs past a length are 0, the final state Y_h (Y_c) is each sequence's state at its
own end, and the reverse direction starts at each sequence's own last element, which is what
``rnnkit.layers`` computes with ``lengths=``. So before exporting, each rnnkit ``LSTM``/``GRU``/``RNN`` of a
copy of the model is replaced by :class:`OnnxRecurrent`: in torch it calls the original layer (the exported
graph is checked against it), and its ONNX symbolic emits one ONNX operator per layer, with the weights
reordered from torch's gate order to ONNX's:

* LSTM: torch stacks the gates (i, f, g, o), ONNX (i, o, f, c);
* GRU: torch (r, z, n), ONNX (z, r, h); torch's form n_t = tanh(W_in x + b_in + r_t * (W_hn h + b_hn)) is
  ``linear_before_reset=1``, Cho et al.'s n_t = tanh(W_in x + W_hn (r_t * h) + b) is ``linear_before_reset=0``;
* RNN: ``activations=["Tanh"]`` or ``["Relu"]``.

Not expressible with these operators: layer norm, projections (``proj_size``), residual connections,
``merge="sum"`` and zoneout. The single-step parts (``lm-step``, ``decoder-step``, T = 1) then trace rnnkit's
own path for one step instead (exact, any batch size); the sequence parts (classifier, tagger, encoder)
raise a ValueError naming the option.

Parts (``export_onnx(model, path, part=...)``), inputs -> outputs, axes B (batch), T (time), S (source):

==================  ====================================================  ===========================================
part                inputs                                                outputs
==================  ====================================================  ===========================================
``lm-step``         tokens (B,) int64, state.h (B, L, H) [, state.c]      log_probs (B, V), state_out.h [, .c]
``classifier``      tokens (B, T) int64 (or inputs (B, T, F)), lengths    logits (B, C)
``tagger``          tokens (B, T) int64, lengths (B,) int64               emissions (B, T, K)
``encoder``         src (B, S) int64, src_lengths (B,) int64              state.<key>: the decoder's initial state
``decoder-step``    prev_tokens (B,) int64, state.<key> ...               log_probs (B, V), state_out.<key>
==================  ====================================================  ===========================================

The tagger's CRF Viterbi decoding (a dynamic-programming loop with back-pointers) is not in the graph: run it
in Python on the exported emissions (``model.crf.viterbi``), or take the argmax without a CRF. The
``decoder-step`` graph may leave out state entries the decoder does not read (e.g. ``state.step`` unless the
attention is local): feed only ``session.get_inputs()``.

Export uses torch's TorchScript-based exporter (``dynamo=False``, opset 17): the dynamo exporter needs
``onnxscript`` and cannot follow the autograd-function symbolic used here.

Example::

    paths = export_run("runs/lm", "runs/lm/onnx")            # every part of the run's model
    session = onnxruntime.InferenceSession(str(paths[0]))
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.layers import GRU, LSTM, RNN
from rnnkit.models import LanguageModel, SequenceClassifier, SequenceTagger
from rnnkit.seq2seq import Seq2Seq

__all__ = ["OPSET", "PARTS", "OnnxRecurrent", "export_onnx", "export_run", "load_run_model", "default_parts"]

OPSET = 17
PARTS = ("lm-step", "classifier", "tagger", "encoder", "decoder-step")

# ONNX rows of the stacked gate matrices, as torch chunk indices (see the module docstring).
_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN_TANH": (0,), "RNN_RELU": (0,)}
_ONNX_OP = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
# Layers reachable from the autograd function's forward by an int key (autograd functions take tensors and
# plain Python values; the layer object itself is kept out of the traced graph).
_REGISTRY: dict[int, nn.Module] = {}


def _check_exportable(layer: nn.Module, name: str) -> None:
    unsupported = []
    if getattr(layer, "layer_norm", False):
        unsupported.append("layer_norm=True")
    if getattr(layer, "proj_size", 0):
        unsupported.append(f"proj_size={layer.proj_size}")
    if layer.residual:
        unsupported.append("residual=True")
    if layer.merge != "concat":
        unsupported.append(f"merge={layer.merge!r}")
    if layer.zoneout:
        unsupported.append(f"zoneout={layer.zoneout}")
    if unsupported:
        raise ValueError(
            f"the recurrent layer {name or 'model'} cannot be exported to ONNX: the ONNX LSTM/GRU/RNN operators "
            f"have no {', '.join(unsupported)}; expected a standard layer"
        )


def _reorder(weight: Tensor, mode: str) -> Tensor:
    """Rows of a stacked gate matrix or bias from torch's gate order to ONNX's."""
    chunks = weight.chunk(len(_GATE_ORDER[mode]), dim=0)
    return torch.cat([chunks[i] for i in _GATE_ORDER[mode]], dim=0)


class _RecurrentFunction(torch.autograd.Function):
    """Torch: the original layer, time-major. ONNX: one LSTM/GRU/RNN operator per layer."""

    @staticmethod
    def forward(ctx, key: int, x: Tensor, lengths: Tensor | None, h0: Tensor | None, c0: Tensor | None,
                *weights: Tensor):  # noqa: ANN205
        layer = _REGISTRY[key]
        hx = None if h0 is None else ((h0, c0) if layer.mode == "LSTM" else h0)
        # The exporter records this call as one node (the symbolic below); pause the tracer inside it, where
        # the layer's checks and packing would otherwise be traced too and confuse the exporter.
        tracing_state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            if layer.batch_first:
                output, hidden = layer(x.transpose(0, 1), hx, lengths=lengths)
                output = output.transpose(0, 1)  # (T, B, D*H)
            else:
                output, hidden = layer(x, hx, lengths=lengths)
        finally:
            torch._C._set_tracing_state(tracing_state)
        return (output, *hidden) if layer.mode == "LSTM" else (output, hidden)

    @staticmethod
    def symbolic(g, key: int, x, lengths, h0, c0, *weights):  # noqa: ANN205
        from torch.onnx._internal.torchscript_exporter.symbolic_opset9 import unused

        layer = _REGISTRY[key]
        mode, directions, hidden_size = layer.mode, layer.num_directions, layer.hidden_size
        options: dict[str, Any] = {"hidden_size_i": hidden_size}
        if directions == 2:
            options["direction_s"] = "bidirectional"
        if mode == "GRU":
            options["linear_before_reset_i"] = 1 if layer.reset_after else 0
        if mode.startswith("RNN"):
            options["activations_s"] = ["Tanh" if mode == "RNN_TANH" else "Relu"] * directions
        sequence_lens = unused(g) if lengths is None else g.op("Cast", lengths, to_i=6)  # int32, as ONNX wants

        def constant(values):
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.long))

        def layer_state(state, index: int):
            if state is None:
                return unused(g)
            start, end = index * directions, (index + 1) * directions
            return g.op("Slice", state, constant([start]), constant([end]), constant([0]))

        layer_input, finals_h, finals_c = x, [], []
        for index in range(layer.num_layers):
            weight_ih, weight_hh, bias = weights[3 * index: 3 * index + 3]
            inputs = [layer_input, weight_ih, weight_hh, bias, sequence_lens, layer_state(h0, index)]
            if mode == "LSTM":
                inputs.append(layer_state(c0, index))
            results = g.op(_ONNX_OP[mode], *inputs, outputs=3 if mode == "LSTM" else 2, **options)
            output = results[0]  # (T, D, B, H)
            finals_h.append(results[1])  # (D, B, H)
            if mode == "LSTM":
                finals_c.append(results[2])
            if directions == 2:
                output = g.op("Transpose", output, perm_i=[0, 2, 1, 3])  # (T, B, D, H)
                output = g.op("Reshape", output, constant([0, 0, -1]))  # (T, B, D*H)
            else:
                output = g.op("Squeeze", output, constant([1]))  # (T, B, H)
            layer_input = output

        def stacked(states):
            return states[0] if len(states) == 1 else g.op("Concat", *states, axis_i=0)  # (L*D, B, H)

        if mode == "LSTM":
            return layer_input, stacked(finals_h), stacked(finals_c)
        return layer_input, stacked(finals_h)


class OnnxRecurrent(nn.Module):
    """Stands in for an rnnkit LSTM/GRU/RNN in a model being exported (same call signature and results).

    The weights are kept in ONNX's layout as buffers: per layer W (D, G*H, D_in), R (D, G*H, H) and
    B (D, 2*G*H) (input and recurrent biases), with D directions and G gates; zeros for a layer without bias.
    """

    def __init__(self, layer: nn.Module, name: str = "") -> None:
        super().__init__()
        if not isinstance(layer, (LSTM, GRU, RNN)):
            raise ValueError(f"OnnxRecurrent wraps an rnnkit LSTM, GRU or RNN, got {type(layer).__name__}")
        _check_exportable(layer, name)
        self.layer = layer.eval()
        self.key = id(layer)
        _REGISTRY[self.key] = layer
        gates = len(_GATE_ORDER[layer.mode]) * layer.hidden_size
        for index in range(layer.num_layers):
            per_direction = {"W": [], "R": [], "B": []}
            for direction in range(layer.num_directions):
                suffix = f"_l{index}" + ("_reverse" if direction else "")
                weight_ih = getattr(layer, "weight_ih" + suffix).detach()
                weight_hh = getattr(layer, "weight_hh" + suffix).detach()
                if layer.bias:
                    bias_ih = getattr(layer, "bias_ih" + suffix).detach()
                    bias_hh = getattr(layer, "bias_hh" + suffix).detach()
                else:
                    bias_ih = bias_hh = weight_ih.new_zeros(gates)
                per_direction["W"].append(_reorder(weight_ih, layer.mode))  # (G*H, D_in)
                per_direction["R"].append(_reorder(weight_hh, layer.mode))  # (G*H, H)
                per_direction["B"].append(torch.cat([_reorder(bias_ih, layer.mode), _reorder(bias_hh, layer.mode)]))
            for kind, tensors in per_direction.items():
                self.register_buffer(f"{kind}_l{index}", torch.stack(tensors))  # (D, ., .)

    def forward(self, input: Tensor, hx=None, *, lengths: Tensor | None = None):
        layer = self.layer
        x = input.transpose(0, 1) if layer.batch_first else input  # (T, B, D_in)
        h0 = c0 = None
        if hx is not None:
            h0, c0 = hx if layer.mode == "LSTM" else (hx, None)
        if lengths is not None:
            lengths = torch.as_tensor(lengths).to(device=x.device, dtype=torch.long)
        weights = [getattr(self, f"{kind}_l{index}") for index in range(layer.num_layers) for kind in "WRB"]
        results = _RecurrentFunction.apply(self.key, x, lengths, h0, c0, *weights)
        output, hidden = results[0], (tuple(results[1:]) if layer.mode == "LSTM" else results[1])
        if lengths is not None:
            # Outputs past each length are 0 (as rnnkit.layers promises), whatever the runtime leaves there.
            steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (T, 1)
            valid = (steps < lengths.unsqueeze(0)).unsqueeze(2)  # (T, B, 1), True at real steps
            output = output * valid.to(output.dtype)
        if layer.batch_first:
            output = output.transpose(0, 1)  # (B, T, D*H)
        return output, hidden


def _replace_layers(model: nn.Module, single_step: bool = False) -> nn.Module:
    """A copy of ``model`` in evaluation mode with every rnnkit LSTM/GRU/RNN replaced by OnnxRecurrent.

    With ``single_step`` (the lm-step and decoder-step parts run T = 1) a layer the ONNX operators cannot
    express (layer norm, projections, ...) is kept and traced on rnnkit's own path instead: a loop of one
    step unrolls to exactly the step's operations, so nothing depends on the example's length.
    """
    model = copy.deepcopy(model).eval()
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, (LSTM, GRU, RNN))]
    for name, module in targets:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        try:
            replacement = OnnxRecurrent(module, name)
        except ValueError:
            if not single_step:
                raise
            module.use_fused = False  # rnnkit's own path: the cells' operations, traced for one step
            continue
        setattr(parent, attribute, replacement)
    return model


# -- the exported parts -------------------------------------------------------------------------------------


class _LanguageModelStep(nn.Module):
    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model
        self.keys = ("h", "c") if model.config.cell == "lstm" else ("h",)

    def forward(self, tokens: Tensor, *state: Tensor):
        log_probs, new_state = self.model.step(tokens, dict(zip(self.keys, state, strict=True)))
        return (log_probs, *(new_state[key] for key in self.keys))


class _Classifier(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.model(tokens, lengths)


class _Encoder(nn.Module):
    def __init__(self, model: Seq2Seq, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, src: Tensor, src_lengths: Tensor):
        state = self.model.decoder.init_state(self.model.encoder(src, src_lengths))
        return tuple(state[key] for key in self.keys)


class _DecoderStep(nn.Module):
    def __init__(self, model: Seq2Seq, in_keys: list[str], out_keys: list[str]) -> None:
        super().__init__()
        self.model, self.in_keys, self.out_keys = model, in_keys, out_keys

    def forward(self, prev_tokens: Tensor, *state: Tensor):
        logits, new_state = self.model.decoder.step(prev_tokens, dict(zip(self.in_keys, state, strict=True)))
        return (logits.log_softmax(dim=-1), *(new_state[key] for key in self.out_keys))


def _example_batch(vocab_size: int, batch_size: int = 3, max_length: int = 5) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab_size, (batch_size, max_length), generator=generator)  # (B, T)
    lengths = torch.tensor([max_length, 2, 4][:batch_size])  # variable lengths, not sorted
    return tokens, lengths


def _build(model: nn.Module, part: str) -> tuple[nn.Module, tuple, list[str], list[str], dict]:
    """The module to trace, example inputs, input and output names, and dynamic axes."""
    batch = {0: "batch"}
    batch_time = {0: "batch", 1: "time"}
    if part == "lm-step":
        if not isinstance(model, LanguageModel):
            raise ValueError(f"part 'lm-step' needs a LanguageModel, got {type(model).__name__}")
        wrapper = _LanguageModelStep(model)
        state = model.start(3)
        names = [f"state.{key}" for key in wrapper.keys]
        out_names = [f"state_out.{key}" for key in wrapper.keys]
        inputs = (torch.tensor([1, 2, 3]), *(state[key] for key in wrapper.keys))
        axes = {name: batch for name in ["tokens", "log_probs", *names, *out_names]}
        return wrapper, inputs, ["tokens", *names], ["log_probs", *out_names], axes
    if part in ("classifier", "tagger"):
        expected = SequenceClassifier if part == "classifier" else SequenceTagger
        if not isinstance(model, expected):
            raise ValueError(f"part {part!r} needs a {expected.__name__}, got {type(model).__name__}")
        config = model.config
        if getattr(config, "vocab_size", None) is not None:
            tokens, lengths = _example_batch(config.vocab_size)
            input_name = "tokens"
        else:  # float features (B, T, F)
            tokens, lengths = torch.randn(3, 5, config.input_size), _example_batch(2)[1]
            input_name = "inputs"
        output = "logits" if part == "classifier" else "emissions"
        axes = {input_name: batch_time, "lengths": batch, output: batch if part == "classifier" else batch_time}
        return _Classifier(model), (tokens, lengths), [input_name, "lengths"], [output], axes
    if not isinstance(model, Seq2Seq):
        raise ValueError(f"part {part!r} needs a Seq2Seq model, got {type(model).__name__}")
    src, src_lengths = _example_batch(model.encoder.embedding.num_embeddings)
    with torch.no_grad():
        state = model.start(src, src_lengths)
        _, next_state = model.decoder.step(torch.tensor([1, 2, 3]), state)
    in_keys, out_keys = sorted(state), sorted(next_state)

    def state_axes(key: str, tensor: Tensor) -> dict[int, str]:
        # Source-length axes: every state tensor with S along dim 1 (keys, keys_proj, valid, attention, and
        # coverage and source with coverage or copy attention).
        axes = {0: "batch"}
        if tensor.dim() >= 2 and key in ("keys", "keys_proj", "valid", "attention", "coverage", "source"):
            axes[1] = "source"
        return axes

    if part == "encoder":
        names = [f"state.{key}" for key in in_keys]
        axes = {"src": {0: "batch", 1: "source"}, "src_lengths": batch}
        axes.update({f"state.{key}": state_axes(key, state[key]) for key in in_keys})
        return _Encoder(model, in_keys), (src, src_lengths), ["src", "src_lengths"], names, axes
    if part == "decoder-step":
        inputs = (torch.tensor([1, 2, 3]), *(state[key] for key in in_keys))
        axes = {"prev_tokens": batch, "log_probs": batch}
        axes.update({f"state.{key}": state_axes(key, state[key]) for key in in_keys})
        axes.update({f"state_out.{key}": state_axes(key, next_state[key]) for key in out_keys})
        input_names = ["prev_tokens", *(f"state.{key}" for key in in_keys)]
        output_names = ["log_probs", *(f"state_out.{key}" for key in out_keys)]
        return _DecoderStep(model, in_keys, out_keys), inputs, input_names, output_names, axes
    raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def default_parts(model: nn.Module) -> tuple[str, ...]:
    """The parts that make up ``model``'s inference: one for the task models, encoder + decoder-step for seq2seq."""
    if isinstance(model, LanguageModel):
        return ("lm-step",)
    if isinstance(model, SequenceTagger):
        return ("tagger",)
    if isinstance(model, SequenceClassifier):
        return ("classifier",)
    if isinstance(model, Seq2Seq):
        return ("encoder", "decoder-step")
    raise ValueError(
        "ONNX export covers LanguageModel, SequenceClassifier, SequenceTagger and Seq2Seq, "
        f"got {type(model).__name__}"
    )


def load_run_model(run_dir: str | Path) -> nn.Module:
    """The trained model of a run directory (``config.json`` names the task; its ``load`` rebuilds the model)."""
    from rnnkit.tasks import task_module

    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"a run directory holds config.json, but {config_path} does not exist")
    task = json.loads(config_path.read_text(encoding="utf-8")).get("task")
    return task_module(task).load(run_dir).model


@contextlib.contextmanager
def _static_layer_norm_shape() -> Iterator[None]:
    """While tracing, give layer norm its normalised size as a Python int.

    ``rnnkit.cells._layer_norm`` passes ``(x.shape[-1],)``, which the tracer records as a graph value, and the
    TorchScript exporter cannot turn a traced list into LayerNormalization's static shape. The width of a
    state never changes, so a constant is exact.
    """
    from rnnkit import cells

    original = cells._layer_norm

    def layer_norm(x: Tensor, gain: Tensor, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
        return torch.nn.functional.layer_norm(x, (int(gain.shape[0]),), gain, bias, eps)

    cells._layer_norm = layer_norm
    try:
        yield
    finally:
        cells._layer_norm = original


def export_onnx(model: nn.Module | str | Path, path: str | Path, part: str | None = None) -> Path:
    """Write one part of a model (or of a run directory's model) as an ONNX graph; returns the path.

    Args:
        model: a LanguageModel, SequenceClassifier (or regressor), SequenceTagger or Seq2Seq, or a run
            directory holding one.
        path: the ``.onnx`` file to write (parent directories are created).
        part: one of :data:`PARTS`; None: the model's only part (a Seq2Seq has two: give one).
    """
    if isinstance(model, (str, Path)):
        model = load_run_model(model)
    if part is None:
        parts = default_parts(model)
        if len(parts) != 1:
            raise ValueError(f"{type(model).__name__} has the parts {parts}: choose one with part=")
        part = parts[0]
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    exportable = _replace_layers(model, single_step=part in ("lm-step", "decoder-step"))
    wrapper, inputs, input_names, output_names, axes = _build(exportable, part)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad(), _static_layer_norm_shape():
        # The TorchScript exporter warns that it is deprecated and that shape checks are traced as constants;
        # the checks ran on the example, and the parity tests cover other shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, inputs, str(path), dynamo=False, opset_version=OPSET, input_names=input_names,
            output_names=output_names, dynamic_axes=axes, do_constant_folding=True,
        )  # fmt: skip
    for module in exportable.modules():
        if isinstance(module, OnnxRecurrent):
            _REGISTRY.pop(module.key, None)  # the copy was only for this export
    return path


def export_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Export every part of a run directory's model to ``out_dir`` (default ``RUN_DIR/onnx``) as
    ``<part>.onnx``; what ``rnnkit export RUN_DIR --format onnx`` does. Returns the written paths."""
    model = load_run_model(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "onnx"
    return [export_onnx(model, out_dir / f"{part}.onnx", part) for part in default_parts(model)]
