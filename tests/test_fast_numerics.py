"""Every execution path of the drop-in layers at every input scale: no NaN or infinity where the reference has none,
and no larger errors than the reference's own.

Raw, unnormalised inputs (pixel values 0-255, counts, prices) drive gate pre-activations far into the saturated
range, where a sigmoid written as 1 / (1 + exp(-x)) overflows: compiled with -ffast-math, 1 / inf became NaN and
rnnkit.GRU returned NaN where torch.nn.GRU did not (issue 17). Here each layer kind runs on inputs scaled from 1e-3
to 1e4, with and without ``lengths=``, in both directions, on one and on two threads (with the kernels' row split
forced on, so that these small steps really run on two threads), on each path the layers can take: torch's fused
kernel, the fast path's step loop in C, its Python loop with one C kernel a step, and its torch operations, each
with the products in oneDNN and in torch (MKL). Outputs, final states and every gradient (input, initial states,
every parameter) are compared with the reference computed in float64 — torch.nn for the standard cells, rnnkit's
reference path (the cells stepped with autograd) for the layer-norm LSTM and the reset-before GRU — and their error
must stay within a few times that of the float32 reference (torch.nn, or the reference path, in float32).
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import kernels, linear

# H = 20: one full 16-wide AVX-512 vector and a remainder, so the kernels' vector code and their scalar tail both run.
D, H, B, T = 3, 20, 5, 7
LENGTHS = [7, 3, 1, 6, 4]  # unsorted, includes 1 and T
SCALES = [1e-3, 1.0, 255.0, 1e4]
GAIN_CAP = 100.0  # the layer-norm LSTM's gains follow the scale up to here (see _compare_at_every_scale)

# name: (rnnkit layer, its extra arguments, torch.nn reference or None: rnnkit's reference path)
VARIANTS = {
    "lstm": (rnnkit.LSTM, {}, torch.nn.LSTM),
    "gru": (rnnkit.GRU, {}, torch.nn.GRU),
    "rnn_tanh": (rnnkit.RNN, {}, torch.nn.RNN),
    "rnn_relu": (rnnkit.RNN, {"nonlinearity": "relu"}, torch.nn.RNN),
    "lstm_layer_norm": (rnnkit.LSTM, {"layer_norm": True}, None),
    "gru_reset_before": (rnnkit.GRU, {"reset_after": False}, None),
}
# (step loop, products): torch's fused kernel; the fast path's loop in C (its products through torch's sgemm_, so
# never oneDNN); its loop in Python with one C kernel a step, or with torch operations, products in either.
PATHS = [("torch-fused", "mkl"), ("native-sequence", "mkl"), ("native-step", "mkl"), ("native-step", "onednn"),
         ("torch-ops", "mkl"), ("torch-ops", "onednn")]
THREADS = [1, 2]
CASES = [
    (name, loop, products, threads)
    for name, (_, _, reference) in VARIANTS.items()
    for loop, products in PATHS
    for threads in THREADS
    if (loop != "torch-fused" or reference is not None)  # torch has no kernel for the extras
    and (threads == 1 or loop.startswith("native"))  # the C kernels split rows over threads; tiny torch ops do not
]


@contextlib.contextmanager
def _threads(count: int):
    """Run on ``count`` threads (the test configuration pins 1), and let the C kernels split even these small
    steps over the threads (they do from 16,384 values a step otherwise)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    library = kernels.library()
    if library is not None:
        library.set_parallel_min(0)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        if library is not None:
            library.set_parallel_min(16384)


def _force(monkeypatch, loop: str, products: str) -> None:
    """Make the fast path take ``loop`` and ``products`` on this machine, whatever it would choose itself."""
    if loop.startswith("native") and kernels.library() is None:
        pytest.skip("the C kernels could not be built here")
    if loop == "native-sequence" and not kernels.sequences_available(torch.zeros(2, 3)):
        pytest.skip("this torch exports no usable sgemm_: no step loop in C")
    if products == "onednn" and not linear._SUPPORTED:
        pytest.skip("this torch has no oneDNN (mkldnn) build")
    if loop == "native-step":
        monkeypatch.setattr(kernels, "_sgemm", 0)
    elif loop == "torch-ops":
        monkeypatch.setattr(kernels, "available", lambda *tensors: False)
    monkeypatch.setattr(linear, "_AVAILABLE", products == "onednn")
    monkeypatch.setattr(linear, "MIN_MACS", 0)


def _modules(name: str, loop: str):
    """(the layer on the path under test, the float32 reference, the float64 reference), same weights."""
    layer, extra, reference = VARIANTS[name]
    torch.manual_seed(0)
    ours = layer(D, H, bidirectional=True, use_fused=loop == "torch-fused", **extra)
    if reference is not None:
        single = reference(D, H, bidirectional=True, **extra)
        single.load_state_dict(ours.state_dict())
    else:
        single = layer(D, H, bidirectional=True, use_fused=False, use_fast_path=False, **extra)
        single.load_state_dict(ours.state_dict())
    return ours, single, copy.deepcopy(single).double()


def _run(module, x, states, lengths):
    """Outputs, final states and the gradients of x, the initial states and every parameter of a random readout."""
    x = x.clone().requires_grad_()
    states = [s.clone().requires_grad_() for s in states]
    hx = tuple(states) if len(states) == 2 else states[0]
    if lengths is None:
        output, hidden = module(x, hx)
    elif isinstance(module, torch.nn.RNNBase):  # torch's own way to variable lengths
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        output, hidden = module(packed, hx)
        output, _ = pad_packed_sequence(output, total_length=T)
    else:
        output, hidden = module(x, hx, lengths=lengths)
    results = [output, *(hidden if isinstance(hidden, tuple) else (hidden,))]
    generator = torch.Generator().manual_seed(5)
    loss = sum((r * torch.randn(r.shape, generator=generator, dtype=r.dtype)).sum() for r in results)
    grads = torch.autograd.grad(loss, [x, *states, *module.parameters()])
    return [r.detach() for r in results] + list(grads)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name,loop,products,threads", CASES)
def test_every_path_is_as_accurate_as_the_reference_at_every_scale(name, loop, products, threads, with_lengths,
                                                                   monkeypatch):
    _force(monkeypatch, loop, products)
    with _threads(threads):
        _compare_at_every_scale(name, loop, with_lengths)


def _compare_at_every_scale(name: str, loop: str, with_lengths: bool) -> None:
    ours, single, double = _modules(name, loop)
    lengths = LENGTHS if with_lengths else None
    generator = torch.Generator().manual_seed(1)
    state_count = 2 if VARIANTS[name][0] is rnnkit.LSTM else 1
    gains = {n: p.detach().clone() for n, p in ours.named_parameters() if n.startswith("ln_ih_weight")}
    for scale in SCALES:
        # The layer-norm LSTM normalises what its gates see, whatever the input's scale: the gains of its input's
        # normalisation grow with the scale instead, up to GAIN_CAP, which takes pre-activations past -89 (where
        # 1 / (1 + exp(-x)) overflowed). Not the recurrent ones: a recurrence that multiplies by large gains at
        # every step turns float32 rounding into noise, and no implementation can be compared with another there.
        for module in (ours, single, double):
            with torch.no_grad():
                for gain_name, gain in gains.items():
                    getattr(module, gain_name).copy_(min(scale, GAIN_CAP) * gain)
        x = scale * torch.randn(T, B, D, generator=generator)
        states = [torch.randn(2, B, H, generator=generator) for _ in range(state_count)]
        truth = _run(double, x.double(), [s.double() for s in states], lengths)
        reference = _run(single, x, states, lengths)
        actual = _run(ours, x, states, lengths)
        names = ["output", *["h_n", "c_n"][:state_count], "dx", *["dh_0", "dc_0"][:state_count],
                 *(f"d{n}" for n, _ in ours.named_parameters())]
        for what, value, single_value, exact in zip(names, actual, reference, truth, strict=True):
            non_finite = int((~torch.isfinite(value) & torch.isfinite(exact)).sum())
            assert non_finite == 0, f"scale {scale}: {non_finite} non-finite in {what} where the reference has none"
            error = (value.double() - exact).abs().max().item()
            reference_error = (single_value.double() - exact).abs().max().item()
            bound = 4 * reference_error + 1e-6 * exact.abs().max().item() + 1e-12
            assert error <= bound, f"scale {scale}: {what} off by {error:.3g}, float32 reference {reference_error:.3g}"


@pytest.mark.parametrize("threads", THREADS)
def test_the_kernels_split_rows_over_two_threads_in_these_tests(threads):
    """The threaded row split really runs here (2 threads: rows over both), not only on large machines."""
    library = kernels.library()
    if library is None:
        pytest.skip("the C kernels could not be built here")
    with _threads(threads):
        assert library.row_threads(B, H) == min(threads, B)


def test_raw_pixel_rows_give_no_nan():
    """The reproduction of issue 17: MNIST-like rows (0-255) through rnnkit.GRU with torch.nn.GRU's weights, in
    training mode, on the path the layer chooses itself."""
    torch.manual_seed(0)
    reference = torch.nn.GRU(28, 128, batch_first=True)
    layer = rnnkit.GRU(28, 128, batch_first=True)
    layer.load_state_dict(reference.state_dict())
    pixels = torch.randint(0, 256, (32, 28, 28), generator=torch.Generator().manual_seed(2)).float()
    output, h_n = layer(pixels)
    expected, expected_h_n = reference(pixels)
    assert torch.isfinite(output).all() and torch.isfinite(h_n).all()
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_n, expected_h_n, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("loop", ["native-sequence", "native-step", "torch-ops"])
def test_a_nan_input_gives_nan_where_torch_does(name, loop, monkeypatch):
    """Saturating by clamping would have hidden a NaN input; the fast path propagates it exactly as torch.nn."""
    _force(monkeypatch, loop, "mkl")
    ours, reference, _ = _modules(name, loop)
    x = torch.randn(T, B, D, generator=torch.Generator().manual_seed(3))
    x[2, 1, 0] = float("nan")
    with torch.no_grad():
        output, _ = ours(x)
        expected, _ = reference(x)
    assert torch.equal(output.isnan(), expected.isnan()) and bool(expected.isnan().any())
