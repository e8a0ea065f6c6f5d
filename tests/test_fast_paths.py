"""Every fast path against the reference path: rnnkit.fast vs the cells' recur stepped with autograd.

Outputs, final states and the gradients of the input, the initial state and every parameter, in float32
(1e-5) and by gradcheck in float64; with and without lengths, both directions, two layers, initial state
given or omitted; in float32 with each step loop the dispatcher can choose (in C, in Python with the C kernels
of csrc/, with torch operations; float64 always uses torch operations), and with the products of
rnnkit.fast.products in oneDNN and in torch. Then the drop-in layers' choice of path ("auto") against torch.nn.
"""

from __future__ import annotations

import itertools
import platform

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import fast
from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.fast import dispatch, native, storage
from rnnkit.recurrent import Recurrent

D, H, B, T = 3, 4, 4, 6
LENGTHS = [4, 6, 1, 3]  # unsorted, includes 1 and T
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}

CELLS = {
    "rnn_tanh": lambda d, h=H, **kw: RNNCell(d, h, **kw),
    "rnn_relu": lambda d, h=H, **kw: RNNCell(d, h, nonlinearity="relu", **kw),
    "rnn_no_bias": lambda d, h=H, **kw: RNNCell(d, h, bias=False, **kw),
    "lstm": lambda d, h=H, **kw: LSTMCell(d, h, **kw),
    "lstm_no_bias": lambda d, h=H, **kw: LSTMCell(d, h, bias=False, **kw),
    "lstm_layer_norm": lambda d, h=H, **kw: LSTMCell(d, h, layer_norm=True, **kw),
    "gru": lambda d, h=H, **kw: GRUCell(d, h, **kw),
    "gru_no_bias": lambda d, h=H, **kw: GRUCell(d, h, bias=False, **kw),
    "gru_reset_before": lambda d, h=H, **kw: GRUCell(d, h, reset_after=False, **kw),
    "gru_reset_before_no_bias": lambda d, h=H, **kw: GRUCell(d, h, reset_after=False, bias=False, **kw),
}


def _recurrent(name: str, bidirectional: bool, dtype=torch.float32, seed: int = 0) -> Recurrent:
    """Two layers of cell ``name`` with random parameters (so layer-norm gains and shifts matter too)."""
    torch.manual_seed(seed)
    recurrent = Recurrent(lambda d, layer, direction: CELLS[name](d, dtype=dtype), input_size=D, num_layers=2,
                          bidirectional=bidirectional)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in recurrent.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return recurrent


def _flat(states) -> list[torch.Tensor]:
    return [t for s in states for t in (s if isinstance(s, tuple) else (s,))]


def _random_states(recurrent: Recurrent, dtype=torch.float32):
    generator = torch.Generator().manual_seed(7)
    states = []
    for cell in recurrent.cells:
        zero = cell.initial_state(B, dtype=dtype)
        if isinstance(zero, tuple):
            states.append(tuple(torch.randn(z.shape, generator=generator, dtype=dtype).requires_grad_() for z in zero))
        else:
            states.append(torch.randn(zero.shape, generator=generator, dtype=dtype).requires_grad_())
    return states


def _run(recurrent: Recurrent, x, states, lengths):
    """Forward + backward of a random readout of outputs and final states; returns tensors and gradients."""
    output, finals = recurrent(x, states, lengths=lengths)
    results = [output, *_flat(finals)]
    generator = torch.Generator().manual_seed(123)
    loss = sum((r * torch.randn(r.shape, generator=generator, dtype=r.dtype)).sum() for r in results)
    leaves = [x, *(_flat(states) if states is not None else []), *recurrent.parameters()]
    return results, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("name", list(CELLS))
def test_every_cell_has_a_fast_path(name):
    assert dispatch.fast_path_has(CELLS[name](D))


@pytest.fixture(params=["native-sequence", "native-step", "torch-ops"])
def elementwise(request):
    """Run the fast path's step loops in C where they apply ("native-sequence", the default: LSTM, and GRU below
    the products' oneDNN threshold), its elementwise work with one C kernel a step ("native-step": the Python step
    loop, as without torch's sgemm_), or with torch operations."""
    if request.param != "torch-ops" and not native.loaded():
        pytest.skip(f"the native kernels are not available here ({native.load().reason})")
    if request.param == "native-sequence" and not native.has_blas():
        if platform.system() == "Linux" and platform.machine() == "x86_64":
            pytest.fail("torch's sgemm_ was not found: the x86-64 Linux wheels export it from libtorch_cpu")
        pytest.skip("this torch exports no usable sgemm_: the step loops stay in Python")
    with dispatch.override(loop=request.param):
        yield request.param


@pytest.fixture(params=["onednn", "torch"])
def products(request, elementwise):
    """Send every product of rnnkit.fast.products (input projection, per-step products) to oneDNN, or to torch;
    with the step loop of ``elementwise``."""
    if request.param == "onednn" and not dispatch.ONEDNN_SUPPORTED:
        pytest.skip("this torch has no oneDNN (mkldnn) build")
    loop = elementwise
    if loop == "native-sequence" and request.param == "onednn":
        loop = "native-step"  # the loop in C calls torch's BLAS; with oneDNN's products the loop is in Python
    with dispatch.override(loop=loop, products=request.param):
        yield request.param


@pytest.mark.parametrize(
    "name,with_lengths,bidirectional,given_state",
    list(itertools.product(CELLS, [False, True], [False, True], [False, True])),
)
def test_fast_path_equals_reference_path(name, with_lengths, bidirectional, given_state, products):
    recurrent = _recurrent(name, bidirectional)
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(3), requires_grad=True)
    states = _random_states(recurrent) if given_state else None
    lengths = LENGTHS if with_lengths else None
    recurrent.fast_path = False
    expected, expected_grads = _run(recurrent, x, states, lengths)
    recurrent.fast_path = True
    actual, grads = _run(recurrent, x, states, lengths)
    for ours, reference in zip(actual, expected, strict=True):
        torch.testing.assert_close(ours, reference, **TOLERANCE)
    assert len(grads) == len(expected_grads)
    for ours, reference in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(ours, reference, **TOLERANCE)
    if with_lengths:
        padding = torch.arange(T) >= torch.tensor(LENGTHS).unsqueeze(1)  # (B, T)
        assert torch.all(actual[0][padding] == 0), "outputs past a length are 0"


@pytest.mark.parametrize("name", ["lstm", "lstm_layer_norm", "gru", "gru_reset_before", "rnn_tanh"])
def test_storage_in_blocks_of_one_step_equals_reference_path(name, elementwise, monkeypatch):
    """The per-step storage and dL/d(W_hh h) are kept in blocks; one step per block must change nothing."""
    monkeypatch.setattr(storage, "STEP_BLOCK_BYTES", 1)
    monkeypatch.setattr(storage, "GRADIENT_BLOCK_BYTES", 1)
    recurrent = _recurrent(name, True)
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(3), requires_grad=True)
    states = _random_states(recurrent)
    recurrent.fast_path = False
    expected = _run(recurrent, x, states, LENGTHS)
    recurrent.fast_path = True
    actual = _run(recurrent, x, states, LENGTHS)
    for ours, reference in zip([*actual[0], *actual[1]], [*expected[0], *expected[1]], strict=True):
        torch.testing.assert_close(ours, reference, **TOLERANCE)


@pytest.mark.parametrize("name", list(CELLS))
def test_gradcheck_float64(name):
    """Finite differences through the hand-written backward: lengths, both directions, two layers, h_0."""
    recurrent = _recurrent(name, True, dtype=torch.float64)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, D, dtype=torch.float64, generator=generator, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])
    zero = recurrent.cells[0].initial_state(3, dtype=torch.float64)
    first_state = [torch.randn(z.shape, dtype=torch.float64, generator=generator, requires_grad=True)
                   for z in (zero if isinstance(zero, tuple) else (zero,))]

    def run(x, *first):  # the initial state of layer 0, forward direction, given; the others zero
        states = [first if len(first) > 1 else first[0]]
        states += [cell.initial_state(3, dtype=torch.float64) for cell in recurrent.cells[1:]]
        output, finals = recurrent(x, states, lengths=lengths)
        return (output, *_flat(finals))

    assert torch.autograd.gradcheck(run, (x, *first_state))


@pytest.mark.parametrize("name", ["lstm", "lstm_layer_norm", "gru", "gru_reset_before", "rnn_relu"])
def test_padding_reaches_no_output_state_or_gradient(name, elementwise):
    """Loud padding (1e3) gives exactly the results of zero padding, gradients included."""
    recurrent = _recurrent(name, True)
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(4))
    loud = x.clone()
    for b, length in enumerate(LENGTHS):
        x[b, length:] = 0.0
        loud[b, length:] = 1e3 * torch.randn(T - length, D)
    results = []
    for inputs in (x, loud):
        inputs = inputs.requires_grad_()
        output, finals = recurrent(inputs, lengths=LENGTHS)
        loss = output.pow(2).sum() + sum(s.sum() for s in _flat(finals))
        results.append([output, *_flat(finals), *torch.autograd.grad(loss, [inputs, *recurrent.parameters()])])
    for loud_value, zero_value in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(loud_value, zero_value, **TOLERANCE)


@pytest.mark.parametrize("name", ["lstm", "lstm_layer_norm", "gru", "gru_reset_before", "rnn_relu"])
def test_non_finite_padding_stays_out_of_the_recurrence(name, elementwise):
    """inf/NaN padding: outputs, final states and the recurrent weights' gradients stay finite (the input
    weights' gradients sum dL/dxp * x over all steps, so 0 * NaN reaches them on either path)."""
    recurrent = _recurrent(name, True)
    x = torch.randn(B, T, D)
    for b, length in enumerate(LENGTHS):
        x[b, length:] = float("nan") if b % 2 else float("inf")
    x.requires_grad_()
    output, finals = recurrent(x, lengths=LENGTHS)
    loss = output.sum() + sum(s.sum() for s in _flat(finals))
    recurrent_weights = [p for n, p in recurrent.named_parameters() if "weight_hh" in n]
    grads = torch.autograd.grad(loss, [x, *recurrent_weights])
    valid = torch.arange(T) < torch.tensor(LENGTHS).unsqueeze(1)  # (B, T)
    assert torch.isfinite(output).all() and torch.all(output[~valid] == 0)
    assert all(torch.isfinite(s).all() for s in _flat(finals))
    assert torch.isfinite(grads[0][valid]).all() and all(torch.isfinite(g).all() for g in grads[1:])


@pytest.mark.parametrize("name", list(CELLS))
def test_inference_equals_training_forward_and_records_no_graph(name, elementwise):
    """Under no_grad the forward keeps nothing for a backward: same outputs, no graph."""
    recurrent = _recurrent(name, True)
    x = torch.randn(B, T, D)
    expected, expected_finals = recurrent(x.requires_grad_(), lengths=LENGTHS)
    with torch.no_grad():
        output, finals = recurrent(x, lengths=LENGTHS)
    assert output.grad_fn is None and not output.requires_grad
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for ours, reference in zip(_flat(finals), _flat(expected_finals), strict=True):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_fast_path_is_not_used_where_it_does_not_apply():
    lstm_projection = LSTMCell(D, H, proj_size=2)
    layer_norm_gru = GRUCell(D, H, layer_norm=True)
    assert not dispatch.fast_path_has(lstm_projection) and not dispatch.fast_path_has(layer_norm_gru)

    class Subclass(GRUCell):  # may change the equations
        pass

    assert not dispatch.fast_path_has(Subclass(D, H))
    cell = GRUCell(D, H)
    assert dispatch.cell_path(cell).path == "fast"
    handle = cell.register_step_hook(lambda cell, step: None)  # as rnnkit.diagnostics records each step
    assert dispatch.cell_path(cell).path == "reference"
    handle.remove()
    assert dispatch.cell_path(cell).path == "fast"


def test_zoneout_and_recurrent_dropout_stay_on_the_reference_path(monkeypatch):
    calls = []
    monkeypatch.setattr(fast, "run", lambda *args: calls.append(args) or pytest.fail("fast path used"))
    torch.manual_seed(0)
    for options in ({"zoneout": 0.2}, {"recurrent_dropout": 0.3}):
        recurrent = Recurrent(GRUCell(D, H), **options).train()
        recurrent(torch.randn(B, T, D))
    assert not calls


# ---- the drop-in layers: "auto" picks the fast path where it is faster; every path equals torch.nn ----


LAYERS = {
    "lstm": (rnnkit.LSTM, torch.nn.LSTM),
    "gru": (rnnkit.GRU, torch.nn.GRU),
    "rnn": (rnnkit.RNN, torch.nn.RNN),
}


def _torch_run(module, x, hx, lengths):
    if lengths is None:
        output, hidden = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        output, hidden = module(packed, hx)
        output, _ = pad_packed_sequence(output, total_length=x.shape[0])
    return output, hidden


@pytest.mark.parametrize("kind,with_lengths,given_state", list(itertools.product(LAYERS, [False, True], [False, True])))
def test_auto_layers_match_torch_with_gradients(kind, with_lengths, given_state):
    ours, theirs = LAYERS[kind]
    torch.manual_seed(0)
    reference = theirs(D, H, num_layers=2, bidirectional=True)
    module = ours(D, H, num_layers=2, bidirectional=True)
    module.load_state_dict(reference.state_dict())
    lengths = LENGTHS if with_lengths else None
    expects_fast = kind != "lstm" or with_lengths
    assert module.uses_fused_kernel(grad=True, variable_lengths=with_lengths) is not expects_fast
    x = torch.randn(T, B, D, requires_grad=True)
    hx = None
    if given_state:
        hx = torch.randn(4, B, H, requires_grad=True)
        hx = (hx, torch.randn(4, B, H, requires_grad=True)) if kind == "lstm" else hx
    inputs = [x] + (list(hx) if isinstance(hx, tuple) else [hx] if hx is not None else [])
    results = {}
    for name, layer in (("torch", reference), ("rnnkit", module)):
        output, hidden = _torch_run(layer, x, hx, lengths) if name == "torch" else layer(x, hx, lengths=lengths)
        hidden = list(hidden) if isinstance(hidden, tuple) else [hidden]
        generator = torch.Generator().manual_seed(5)
        loss = sum((t * torch.randn(t.shape, generator=generator)).sum() for t in [output, *hidden])
        results[name] = [output, *hidden, *torch.autograd.grad(loss, inputs + list(layer.parameters()))]
    for ours_value, reference_value in zip(results["rnnkit"], results["torch"], strict=True):
        torch.testing.assert_close(ours_value, reference_value, **TOLERANCE)


def test_packed_input_with_gradients_takes_the_fast_path_and_matches_torch():
    torch.manual_seed(0)
    reference = torch.nn.GRU(D, H, bidirectional=True)
    module = rnnkit.GRU(D, H, bidirectional=True)
    module.load_state_dict(reference.state_dict())
    x = torch.randn(T, B, D, requires_grad=True)
    assert not module.uses_fused_kernel(grad=True, variable_lengths=True)
    grads = []
    for layer in (reference, module):
        output, h_n = layer(pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False))
        padded, _ = pad_packed_sequence(output, total_length=T)
        grads.append([padded, h_n, *torch.autograd.grad(padded.pow(2).sum() + h_n.sum(), [x, *layer.parameters()])])
    for ours_value, reference_value in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(ours_value, reference_value, **TOLERANCE)


@pytest.mark.parametrize("loop", ["chosen", "native-step", "torch-ops"])
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "mkl"])
@pytest.mark.parametrize("name", list(CELLS))
def test_fast_path_at_size_is_as_accurate_as_the_reference_path(name, onednn, loop, monkeypatch):
    """At (B, H) = (64, 256) the per-step products and the input projection go to oneDNN (in a step loop in
    Python), or stay with MKL (in a step loop in C where there is one: what the dispatcher chooses, "chosen").
    Its float32 outputs and gradients are compared with the reference path (the cells' recur stepped with
    autograd) run in float64: their errors must be of the size of the float32 reference path's own errors."""
    if onednn and not dispatch.ONEDNN_SUPPORTED:
        pytest.skip("this torch has no oneDNN (mkldnn) build")
    if loop != "torch-ops" and not native.loaded():
        pytest.skip(f"the native kernels are not available here ({native.load().reason})")
    monkeypatch.setattr(dispatch, "_ONEDNN", onednn)  # whatever this CPU would choose
    if loop != "chosen":
        monkeypatch.setattr(dispatch, "_forced", {"loop": loop})
    torch.manual_seed(0)
    recurrent = Recurrent(lambda d, layer, direction: CELLS[name](d, 256), input_size=128,
                          num_layers=1)
    x = torch.randn(64, 12, 128)  # batch first: (B, T, D)
    lengths = torch.randint(1, 13, (64,)).tolist()
    lengths[0] = 12
    readout = torch.randn(64, 12, 256, generator=torch.Generator().manual_seed(5))
    assert dispatch.products_onednn(torch.empty(64, 256), recurrent.cells[0].weight_hh) is onednn
    if loop == "chosen" and native.has_blas():  # the loops run in C exactly when the products stay with MKL
        chosen = dispatch.step_loop(torch.empty(12, 64, 1024), recurrent.cells[0].weight_hh, macs=64 * 256 * 1024)
        assert chosen == ("native-step" if onednn else "native-sequence")

    def run(module, fast, dtype):
        module.fast_path = fast
        inputs = x.to(dtype).requires_grad_()
        output, _ = module(inputs, lengths=lengths)
        grads = torch.autograd.grad((output * readout.to(dtype)).sum(), [inputs, *module.parameters()])
        return [output, *grads]

    fast, reference = run(recurrent, True, torch.float32), run(recurrent, False, torch.float32)
    exact = run(recurrent.double(), False, torch.float64)
    for name, ours, theirs, truth in zip(["output", "x", *dict(recurrent.named_parameters())], fast, reference,
                                         exact, strict=True):
        our_error = (ours.double() - truth).abs().max().item()
        reference_error = (theirs.double() - truth).abs().max().item()
        assert our_error <= 4 * reference_error + 1e-7 * truth.abs().max().item(), (name, our_error,
                                                                                     reference_error)
