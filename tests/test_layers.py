"""rnnkit.LSTM / GRU / RNN against torch.nn: outputs, final states and every gradient, both paths."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
D, H, P, T, B = 3, 4, 2, 5, 4
LENGTHS = [3, 5, 1, 4]  # unsorted, includes 1 and T

# (rnnkit class, torch class, extra constructor arguments)
KINDS = {
    "lstm": (rnnkit.LSTM, torch.nn.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, torch.nn.LSTM, {"proj_size": P}),
    "gru": (rnnkit.GRU, torch.nn.GRU, {}),
    "rnn_tanh": (rnnkit.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnkit.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
}
SWEEP = list(
    itertools.product(
        KINDS,
        [1, 2, 3],  # num_layers
        [False, True],  # bidirectional
        [False, True],  # batch_first
        [True, False],  # bias
        ["padded", "packed", "lengths"],  # input
        [False, True],  # initial state given
    )
)


def _pair(kind: str, seed: int, **kwargs):
    """A torch.nn module and an rnnkit module holding the same weights (copied with load_state_dict)."""
    ours, theirs, extra = KINDS[kind]
    torch.manual_seed(seed)
    reference = theirs(D, H, **extra, **kwargs)
    module = ours(D, H, **extra, **kwargs)
    module.load_state_dict(reference.state_dict())
    return module, reference


def _states(hidden):
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


def _run(module, x, hx, mode: str, batch_first: bool):
    """Forward + backward of a fixed random readout; returns outputs (padded), states and all gradients."""
    lengths = torch.tensor(LENGTHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "LSTM with projections is not supported with oneDNN"
        if mode == "padded":
            output, hidden = module(x, hx)
        elif mode == "packed":
            packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
            packed_output, hidden = module(packed, hx)
            assert isinstance(packed_output, PackedSequence)
            assert torch.equal(packed_output.batch_sizes, packed.batch_sizes)
            assert torch.equal(packed_output.unsorted_indices, packed.unsorted_indices)
            output, _ = pad_packed_sequence(packed_output, batch_first=batch_first, total_length=T)
        elif isinstance(module, torch.nn.RNNBase):  # lengths: torch's own way is a PackedSequence
            packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
            packed_output, hidden = module(packed, hx)
            output, _ = pad_packed_sequence(packed_output, batch_first=batch_first, total_length=T)
        else:
            output, hidden = module(x, hx, lengths=lengths)
    generator = torch.Generator().manual_seed(123)
    loss = (output * torch.randn(output.shape, generator=generator)).sum()
    for state in _states(hidden):
        loss = loss + (state * torch.randn(state.shape, generator=generator)).sum()
    inputs = [x] + (_states(hx) if hx is not None else [])
    names = [name for name, _ in module.named_parameters()]
    grads = torch.autograd.grad(loss, inputs + [p for _, p in module.named_parameters()])
    return output, _states(hidden), dict(zip(["x", "h0", "c0"][: len(inputs)] + names, grads, strict=True))


def _assert_same(actual, expected, what: str) -> None:
    output, states, grads = actual
    ref_output, ref_states, ref_grads = expected
    torch.testing.assert_close(output, ref_output, **TOLERANCE, msg=f"{what}: output")
    assert len(states) == len(ref_states)
    for state, ref in zip(states, ref_states, strict=True):
        torch.testing.assert_close(state, ref, **TOLERANCE, msg=f"{what}: final state")
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **TOLERANCE, msg=f"{what}: grad of {name}")


@pytest.mark.parametrize("kind,num_layers,bidirectional,batch_first,bias,mode,given_state", SWEEP)
def test_matches_torch_on_both_paths(kind, num_layers, bidirectional, batch_first, bias, mode, given_state):
    seed = SWEEP.index((kind, num_layers, bidirectional, batch_first, bias, mode, given_state))
    module, reference = _pair(
        kind, seed, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias
    )
    torch.manual_seed(seed)
    x = torch.randn((B, T, D) if batch_first else (T, B, D), requires_grad=True)
    hx = None
    if given_state:
        layers = num_layers * (2 if bidirectional else 1)
        width = P if kind == "lstm_proj" else H
        hx = torch.randn(layers, B, width, requires_grad=True)
        if kind.startswith("lstm"):
            hx = (hx, torch.randn(layers, B, H, requires_grad=True))
    expected = _run(reference, x, hx, mode, batch_first)
    results = {}
    for fused in (True, False):
        module.use_fused = fused
        assert module.uses_fused_kernel() is fused
        results[fused] = _run(module, x, hx, mode, batch_first)
        _assert_same(results[fused], expected, f"{'fused' if fused else 'own'} path vs torch.nn")
    _assert_same(results[False], results[True], "own path vs fused path")
    if mode != "padded":
        valid = torch.arange(T).unsqueeze(1) < torch.tensor(LENGTHS)  # (T, B)
        padding = ~(valid.t() if batch_first else valid)
        assert torch.all(results[False][0][padding] == 0), "outputs past a length must be 0"


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_loads_both_ways(kind):
    module, reference = _pair(kind, 0, num_layers=2, bidirectional=True)
    assert [(n, p.shape) for n, p in module.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()
    ]
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.5)
    reference.load_state_dict(module.state_dict())
    for (name, ours), (_, theirs) in zip(module.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(ours, theirs), name


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input(kind, batch_first):
    module, reference = _pair(kind, 1, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(T, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_output, expected_hidden = reference(x)
        for fused in (True, False):
            module.use_fused = fused
            output, hidden = module(x)
            torch.testing.assert_close(output, expected_output, **TOLERANCE)
            for state, ref in zip(_states(hidden), _states(expected_hidden), strict=True):
                assert state.dim() == 2
                torch.testing.assert_close(state, ref, **TOLERANCE)
            # the unbatched final state can be fed back in
            module(x, hidden)


@pytest.mark.parametrize("kind", list(KINDS))
def test_default_init_matches_torch_distribution(kind):
    ours, theirs, extra = KINDS[kind]
    module = ours(D, 16, **extra)
    bound = 1 / 16**0.5
    for name, parameter in module.named_parameters():
        assert parameter.abs().max() <= bound, name
        assert parameter.std() > bound / 3, name  # uniform(-b, b) has std b / sqrt(3)


@pytest.mark.parametrize("kind", list(KINDS))
def test_training_dropout_is_torchs(kind):
    """Fused: the same kernel, so the same draws; own path: dropout on every layer output but the last."""
    module, reference = _pair(kind, 2, num_layers=3, dropout=0.5)
    module.train()
    reference.train()
    x = torch.randn(T, B, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(7)
        expected_output, expected_hidden = reference(x)
        torch.manual_seed(7)
        output, hidden = module(x)
    torch.testing.assert_close(output, expected_output, **TOLERANCE)
    for state, ref in zip(_states(hidden), _states(expected_hidden), strict=True):
        torch.testing.assert_close(state, ref, **TOLERANCE)

    # Own path: rebuild the same computation from single-layer pieces, drawing the masks in the same order.
    module.use_fused = False
    ours, _, extra = KINDS[kind]
    singles = []
    for layer in range(3):
        single = ours(D if layer == 0 else module.cells[layer].input_size, H, **extra)
        single.load_state_dict(
            {name.replace(f"_l{layer}", "_l0"): p for name, p in module.state_dict().items() if f"_l{layer}" in name}
        )
        singles.append(single)
    torch.manual_seed(8)
    output, hidden = module(x)
    torch.manual_seed(8)
    layer_input = x
    for layer, single in enumerate(singles):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer_output, _ = single(layer_input)
        if layer < 2:
            layer_output = torch.nn.functional.dropout(layer_output, 0.5, training=True)
        layer_input = layer_output
    torch.testing.assert_close(output, layer_input, **TOLERANCE)
    assert not torch.equal(output, module.eval()(x)[0]), "training mode must drop something"


def test_single_layer_dropout_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        rnnkit.LSTM(D, H, dropout=0.2)


def test_lengths_equal_to_t_equals_no_lengths():
    module, _ = _pair("lstm", 3, bidirectional=True)
    x = torch.randn(T, B, D)
    for fused in (True, False):
        module.use_fused = fused
        output, (h_n, c_n) = module(x, lengths=[T] * B)
        expected, (h_ref, c_ref) = module(x)
        torch.testing.assert_close(output, expected)
        torch.testing.assert_close(h_n, h_ref)


# ---- extras ---------------------------------------------------------------------------------------------


def test_extras_use_own_path_and_defaults_use_fused():
    assert rnnkit.LSTM(D, H).uses_fused_kernel()
    assert rnnkit.GRU(D, H).uses_fused_kernel(grad=False)
    # "auto": with gradients the GRU, the RNN and variable lengths take rnnkit's fast path (measured faster) ...
    assert not rnnkit.GRU(D, H).uses_fused_kernel(grad=True)
    assert not rnnkit.RNN(D, H).uses_fused_kernel(grad=True)
    assert not rnnkit.LSTM(D, H).uses_fused_kernel(grad=True, variable_lengths=True)
    assert rnnkit.LSTM(D, H).uses_fused_kernel(grad=True)
    assert rnnkit.LSTM(D, H).uses_fused_kernel(grad=False, variable_lengths=True)
    # ... but not with torch's dropout draws in training, not if told otherwise
    assert rnnkit.GRU(D, H, num_layers=2, dropout=0.3).uses_fused_kernel(grad=True)
    assert rnnkit.GRU(D, H, use_fused=True).uses_fused_kernel(grad=True)
    assert rnnkit.GRU(D, H, use_fast_path=False).uses_fused_kernel(grad=True)  # the step loop is slower
    assert rnnkit.LSTM(D, H, proj_size=2).uses_fused_kernel(grad=True, variable_lengths=True)  # no fast path
    assert not rnnkit.GRU(D, H, reset_after=False).uses_fused_kernel()
    assert not rnnkit.LSTM(D, H, layer_norm=True).uses_fused_kernel()
    assert not rnnkit.LSTM(D, H, num_layers=2, residual=True).uses_fused_kernel()
    assert not rnnkit.RNN(D, H, zoneout=0.1).uses_fused_kernel()
    assert not rnnkit.GRU(D, H, bidirectional=True, merge="sum").uses_fused_kernel()
    lstm = rnnkit.LSTM(D, H, recurrent_dropout=0.3)
    assert not lstm.uses_fused_kernel()
    assert lstm.eval().uses_fused_kernel(), "recurrent dropout is the identity at evaluation"


def test_forget_bias_initialises_the_forget_gate():
    lstm = rnnkit.LSTM(D, H, num_layers=2, bidirectional=True, forget_bias=1.0)
    for layer, suffix in itertools.product(range(2), ["", "_reverse"]):
        b_ih = getattr(lstm, f"bias_ih_l{layer}{suffix}")
        b_hh = getattr(lstm, f"bias_hh_l{layer}{suffix}")
        assert torch.all(b_ih[H : 2 * H] == 1.0)
        assert torch.all(b_hh[H : 2 * H] == 0.0)
        assert b_ih[:H].abs().max() <= 1 / H**0.5


def test_merge_sum_adds_the_two_directions():
    """Sum merge = forward layer + backward layer run separately (backward on the reversed valid prefix)."""
    torch.manual_seed(0)
    gru = rnnkit.GRU(D, H, bidirectional=True, merge="sum", batch_first=True)
    concat = rnnkit.GRU(D, H, bidirectional=True, batch_first=True)
    concat.load_state_dict(gru.state_dict())
    x = torch.randn(B, T, D)
    output, h_n = gru(x, lengths=LENGTHS)
    both, h_ref = concat(x, lengths=LENGTHS)
    assert output.shape == (B, T, H)
    torch.testing.assert_close(output, both[..., :H] + both[..., H:], **TOLERANCE)
    torch.testing.assert_close(h_n, h_ref, **TOLERANCE)
    deep = rnnkit.GRU(D, H, num_layers=2, bidirectional=True, merge="sum")
    assert deep.weight_ih_l1.shape == (3 * H, H)
    assert deep(torch.randn(T, B, D))[0].shape == (T, B, H)


def test_residual_adds_layer_input_from_the_second_layer():
    torch.manual_seed(0)
    residual = rnnkit.LSTM(D, H, num_layers=2, residual=True, batch_first=True)
    plain = rnnkit.LSTM(D, H, num_layers=2, batch_first=True)
    plain.load_state_dict(residual.state_dict())
    first = rnnkit.LSTM(D, H, batch_first=True)
    first.load_state_dict({k: v for k, v in residual.state_dict().items() if k.endswith("_l0")})
    x = torch.randn(B, T, D)
    output, _ = residual(x, lengths=LENGTHS)
    without, _ = plain(x, lengths=LENGTHS)
    layer0, _ = first(x, lengths=LENGTHS)
    torch.testing.assert_close(output, without + layer0, **TOLERANCE)


def test_recurrent_dropout_uses_one_mask_for_all_steps():
    """With the masks fixed (all units kept or all dropped) the result is known exactly."""
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(D, H, recurrent_dropout=0.5, batch_first=True)
    x = torch.randn(B, T, D)
    lstm.train()
    torch.manual_seed(1)
    output, _ = lstm(x)
    # Reproduce: the mask drawn once, (B, H), scaling h_{t-1} before W_hh at every step.
    torch.manual_seed(1)
    mask = torch.empty(B, H).bernoulli_(0.5) / 0.5
    cell = lstm.cells[0]
    state = cell.initial_state(B)
    outputs = []
    for t in range(T):
        h, state = cell.recur(cell.input_projection(x[:, t]), state, mask)
        outputs.append(h)
    torch.testing.assert_close(output, torch.stack(outputs, 1), **TOLERANCE)
    # At evaluation nothing is dropped: equal to torch.nn.LSTM.
    reference = torch.nn.LSTM(D, H, batch_first=True)
    reference.load_state_dict(lstm.state_dict())
    lstm.eval()
    torch.testing.assert_close(lstm(x)[0], reference(x)[0], **TOLERANCE)


def test_zoneout_keeps_previous_units_and_uses_expectation_at_eval():
    torch.manual_seed(0)
    gru = rnnkit.GRU(D, H, zoneout=0.3, batch_first=True)
    x = torch.randn(B, T, D)
    cell = gru.cells[0]
    # Evaluation: h_t = 0.3 h_{t-1} + 0.7 GRU(x_t, h_{t-1}) (Krueger et al. 2017).
    gru.eval()
    h = torch.zeros(B, H)
    expected = []
    for t in range(T):
        h = 0.3 * h + 0.7 * cell(x[:, t], h)[0]
        expected.append(h)
    torch.testing.assert_close(gru(x)[0], torch.stack(expected, 1), **TOLERANCE)
    # Training: every unit is either the previous value or the new one.
    gru.train()
    output, _ = gru(x)
    previous = torch.zeros(B, H)
    for t in range(T):
        new = cell(x[:, t], previous)[0]
        kept = torch.isclose(output[:, t], previous, atol=1e-6)
        updated = torch.isclose(output[:, t], new, atol=1e-6)
        assert torch.all(kept | updated)
        previous = output[:, t]


def test_layer_norm_layer_equals_its_cells_stepped_by_hand():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(D, H, num_layers=2, layer_norm=True, proj_size=P, batch_first=True)
    assert {"ln_ih_weight_l0", "ln_hh_weight_l1", "ln_cell_weight_l0", "ln_cell_bias_l1"} <= set(
        dict(lstm.named_parameters())
    )
    x = torch.randn(B, T, D)
    output, (h_n, c_n) = lstm(x)
    layer_input = x
    for layer, cell in enumerate(lstm.cells):
        state = cell.initial_state(B)
        outputs = []
        for t in range(T):
            h, state = cell(layer_input[:, t], state)
            outputs.append(h)
        layer_input = torch.stack(outputs, 1)
        torch.testing.assert_close(h_n[layer], state[0], **TOLERANCE)
        torch.testing.assert_close(c_n[layer], state[1], **TOLERANCE)
    torch.testing.assert_close(output, layer_input, **TOLERANCE)


def test_cells_follow_parameter_replacement():
    """The own path reads the layer's current parameters (load_state_dict(assign=True), functional_call)."""
    module, reference = _pair("gru", 4)
    module.use_fused = False
    x = torch.randn(T, B, D)
    replaced = {name: torch.randn_like(p) for name, p in module.named_parameters()}
    expected = torch.func.functional_call(reference, replaced, (x,))[0]
    torch.testing.assert_close(torch.func.functional_call(module, replaced, (x,))[0], expected, **TOLERANCE)
    module.load_state_dict(replaced, assign=True)
    torch.testing.assert_close(module(x)[0], expected, **TOLERANCE)


def test_float64_and_repr():
    lstm = rnnkit.LSTM(D, H, num_layers=2, dtype=torch.float64, layer_norm=True)
    assert lstm(torch.randn(T, B, D, dtype=torch.float64))[0].dtype == torch.float64
    assert "layer_norm=True" in repr(lstm) and "num_layers=2" in repr(lstm)
    assert repr(rnnkit.GRU(D, H)) == "GRU(3, 4)"


# ---- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: rnnkit.LSTM(0, H), "input_size must be a positive integer, got 0"),
        (lambda: rnnkit.GRU(D, -1), "hidden_size must be a positive integer, got -1"),
        (lambda: rnnkit.RNN(D, H, num_layers=0), "num_layers must be a positive integer, got 0"),
        (lambda: rnnkit.RNN(D, H, nonlinearity="sigmoid"), "nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"),
        (lambda: rnnkit.LSTM(D, H, num_layers=2, dropout=1.0), r"dropout must be a probability in \[0, 1\), got 1.0"),
        (lambda: rnnkit.LSTM(D, H, num_layers=2, dropout=-0.1), r"dropout must be .* got -0.1"),
        (lambda: rnnkit.LSTM(D, H, proj_size=H), r"proj_size must be smaller than hidden_size \(4\), got 4"),
        (lambda: rnnkit.GRU(D, H, merge="max"), r"merge must be one of \('concat', 'sum'\), got 'max'"),
        (lambda: rnnkit.LSTM(D, H, zoneout=1.5), r"zoneout must be a probability in \[0, 1\), got 1.5"),
    ],
)
def test_constructor_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("fused", [True, False])
def test_forward_errors(fused):
    lstm = rnnkit.LSTM(D, H, num_layers=2, use_fused=fused)
    gru = rnnkit.GRU(D, H, batch_first=True, use_fused=fused)
    x = torch.randn(T, B, D)
    cases = [
        (lambda: lstm(torch.randn(T, B, 2, D)), r"expects a 3-D input \(T, B, D\) .* got 4-D shape \(5, 4, 2, 3\)"),
        (lambda: lstm(torch.randn(T, B, D + 1)), r"expects 3 input features \(input_size\), got 4"),
        (lambda: lstm(x, torch.zeros(2, B, H)), r"expects hx as a pair \(h_0, c_0\)"),
        (lambda: lstm(x, (torch.zeros(2, B, H), torch.zeros(1, B, H))), r"expects c_0 of shape \(2, 4, 4\)"),
        (lambda: gru(torch.randn(B, T, D), torch.zeros(1, B + 1, H)), r"h_0 of shape \(1, 4, 4\) .* got \(1, 5, 4\)"),
        (lambda: gru(torch.randn(B, T, D), lengths=[1, 2, 3]), r"lengths must have shape \(4,\), .* got \(3,\)"),
        (lambda: gru(torch.randn(B, T, D), lengths=[1, 2, 3, T + 1]), r"at most .* T=5, got 6"),
        (lambda: gru(torch.randn(B, T, D), lengths=[1, 0, 3, 2]), "lengths must be at least 1, got a length of 0"),
        (lambda: gru(torch.randn(B, T, D), lengths=[1.5, 2, 3, 2]), "lengths must hold integers"),
        (lambda: gru(torch.randn(B, T, D, dtype=torch.float64)), "dtype must match the weights' .*float32.*float64"),
        (
            lambda: gru(pack_padded_sequence(torch.randn(B, T, D), LENGTHS, batch_first=True, enforce_sorted=False),
                        lengths=LENGTHS),
            "a PackedSequence carries its own lengths",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_fused_kernel_gets_the_parameters_themselves_and_copies_work():
    import copy

    lstm = rnnkit.LSTM(D, H, num_layers=2, bidirectional=True, proj_size=P)
    parameters = dict(lstm.named_parameters())
    assert all(weight is parameters[name] for name, weight in zip(lstm._flat_weights_names, lstm._flat_weights,
                                                                   strict=True))
    clone = copy.deepcopy(lstm)
    with torch.no_grad():
        for parameter in clone.parameters():
            parameter.mul_(2)
    x = torch.randn(T, B, D)
    for fused in (True, False):
        lstm.use_fused = clone.use_fused = fused
        assert not torch.allclose(clone(x)[0], lstm(x)[0])
    double = copy.deepcopy(lstm).double()
    double.use_fused = False
    torch.testing.assert_close(double(x.double())[0].float(), lstm(x)[0], **TOLERANCE)
