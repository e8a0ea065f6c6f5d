"""rnnkit cells against torch.nn cells, against the equations written out here, and gradcheck in float64."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import rnnkit
from rnnkit.cells import GRUCell, LSTMCell, RNNCell

D, H, P, B, T = 3, 5, 2, 4, 6
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def layer_norm(v, gain, bias=None, eps=1e-5):
    """LN(v) = gain * (v - mean) / sqrt(var + eps) + bias over the last dimension (biased variance)."""
    mean = v.mean(-1, keepdim=True)
    variance = ((v - mean) ** 2).mean(-1, keepdim=True)
    out = gain * (v - mean) / torch.sqrt(variance + eps)
    return out if bias is None else out + bias


def randomise(cell, seed=0):
    """Random values for every parameter, so that layer-norm gains and shifts (initialised 1 and 0) matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return cell


# ---- the equations, written out plainly, one step at a time ---------------------------------------------


def lstm_step(cell, x, h, c):
    """Hochreiter & Schmidhuber with forget gate; Ba et al. 2016 eq. 20-22 with layer norm; Sak et al. 2014."""
    p = dict(cell.named_parameters())
    hidden = cell.hidden_size
    from_input = x @ p["weight_ih"].T
    from_state = h @ p["weight_hh"].T
    if cell.layer_norm:
        from_input = layer_norm(from_input, p["ln_ih_weight"])  # over all 4H
        from_state = layer_norm(from_state, p["ln_hh_weight"])
    pre = from_input + from_state
    if cell.bias:
        pre = pre + p["bias_ih"] + p["bias_hh"]
    i = torch.sigmoid(pre[:, :hidden])
    f = torch.sigmoid(pre[:, hidden : 2 * hidden])
    g = torch.tanh(pre[:, 2 * hidden : 3 * hidden])
    o = torch.sigmoid(pre[:, 3 * hidden :])
    c_new = f * c + i * g
    shown = layer_norm(c_new, p["ln_cell_weight"], p["ln_cell_bias"]) if cell.layer_norm else c_new
    h_new = o * torch.tanh(shown)
    if cell.proj_size:
        h_new = h_new @ p["weight_hr"].T
    return h_new, c_new


def gru_step(cell, x, h):
    """Cho et al. 2014 (reset before: n = tanh(W [r * h, x] + b)) or torch's reset-after form; LN per block."""
    p = dict(cell.named_parameters())
    hidden = cell.hidden_size
    W_ir, W_iz, W_in = p["weight_ih"].split(hidden)
    W_hr, W_hz, W_hn = p["weight_hh"].split(hidden)
    if cell.bias:
        b_ir, b_iz, b_in = p["bias_ih"].split(hidden)
        b_hr, b_hz, b_hn = p["bias_hh"].split(hidden)
    else:
        b_ir = b_iz = b_in = b_hr = b_hz = b_hn = torch.zeros(hidden, dtype=x.dtype)
    rz_input = torch.cat([x @ W_ir.T, x @ W_iz.T], -1)
    n_input = x @ W_in.T
    rz_state = torch.cat([h @ W_hr.T, h @ W_hz.T], -1)
    if cell.layer_norm:
        g_ih, g_hh = p["ln_ih_weight"], p["ln_hh_weight"]
        rz_input = layer_norm(rz_input, g_ih[: 2 * hidden])
        n_input = layer_norm(n_input, g_ih[2 * hidden :])
        rz_state = layer_norm(rz_state, g_hh[: 2 * hidden])
    r = torch.sigmoid(rz_input[:, :hidden] + b_ir + rz_state[:, :hidden] + b_hr)
    z = torch.sigmoid(rz_input[:, hidden:] + b_iz + rz_state[:, hidden:] + b_hz)
    if cell.reset_after:
        n_state = h @ W_hn.T
    else:
        n_state = (r * h) @ W_hn.T  # Cho et al. 2014, eq. 8
    if cell.layer_norm:
        n_state = layer_norm(n_state, p["ln_hh_weight"][2 * hidden :])
    if cell.reset_after:
        n = torch.tanh(n_input + b_in + r * (n_state + b_hn))
    else:
        n = torch.tanh(n_input + b_in + n_state + b_hn)
    return (1 - z) * n + z * h


def rnn_step(cell, x, h):
    p = dict(cell.named_parameters())
    pre = x @ p["weight_ih"].T + h @ p["weight_hh"].T
    if cell.bias:
        pre = pre + p["bias_ih"] + p["bias_hh"]
    return torch.tanh(pre) if cell.nonlinearity == "tanh" else torch.relu(pre)


CELLS = {
    "rnn_tanh": lambda **kw: RNNCell(D, H, **kw),
    "rnn_relu": lambda **kw: RNNCell(D, H, nonlinearity="relu", **kw),
    "lstm": lambda **kw: LSTMCell(D, H, **kw),
    "lstm_proj": lambda **kw: LSTMCell(D, H, proj_size=P, **kw),
    "lstm_ln": lambda **kw: LSTMCell(D, H, layer_norm=True, **kw),
    "lstm_ln_proj": lambda **kw: LSTMCell(D, H, layer_norm=True, proj_size=P, **kw),
    "gru": lambda **kw: GRUCell(D, H, **kw),
    "gru_reset_before": lambda **kw: GRUCell(D, H, reset_after=False, **kw),
    "gru_ln": lambda **kw: GRUCell(D, H, layer_norm=True, **kw),
    "gru_ln_reset_before": lambda **kw: GRUCell(D, H, layer_norm=True, reset_after=False, **kw),
}


def reference_step(cell, x, state):
    if isinstance(cell, LSTMCell):
        h, c = lstm_step(cell, x, *state)
        return h, (h, c)
    h = gru_step(cell, x, state) if isinstance(cell, GRUCell) else rnn_step(cell, x, state)
    return h, h


def random_state(cell, batch=B, dtype=torch.float32):
    shapes = cell.state_shapes(batch)
    if isinstance(shapes[0], tuple):
        return tuple(torch.randn(shape, dtype=dtype) for shape in shapes)
    return torch.randn(shapes, dtype=dtype)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_plain_loop_from_the_equations(name, bias):
    """Stepping the cell, and running it as a layer (hoisted projection), both equal the equations."""
    torch.manual_seed(0)
    cell = randomise(CELLS[name](bias=bias))
    x = torch.randn(B, T, D)
    state = random_state(cell)
    expected_state, expected = state, []
    for t in range(T):
        h, expected_state = reference_step(cell, x[:, t], expected_state)
        expected.append(h)
    expected = torch.stack(expected, 1)  # (B, T, H)

    stepped_state, stepped = state, []
    for t in range(T):
        h, stepped_state = cell(x[:, t], stepped_state)
        stepped.append(h)
    torch.testing.assert_close(torch.stack(stepped, 1), expected, **TOLERANCE)

    output, finals = rnnkit.Recurrent(cell)(x, [state])
    torch.testing.assert_close(output, expected, **TOLERANCE)
    for ours, ref in zip(
        finals[0] if isinstance(state, tuple) else [finals[0]],
        expected_state if isinstance(state, tuple) else [expected_state],
        strict=True,
    ):
        torch.testing.assert_close(ours, ref, **TOLERANCE)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (lambda: RNNCell(D, H), lambda: torch.nn.RNNCell(D, H)),
        (lambda: RNNCell(D, H, bias=False, nonlinearity="relu"), lambda: torch.nn.RNNCell(D, H, False, "relu")),
        (lambda: LSTMCell(D, H), lambda: torch.nn.LSTMCell(D, H)),
        (lambda: LSTMCell(D, H, bias=False), lambda: torch.nn.LSTMCell(D, H, bias=False)),
        (lambda: GRUCell(D, H), lambda: torch.nn.GRUCell(D, H)),
        (lambda: GRUCell(D, H, bias=False), lambda: torch.nn.GRUCell(D, H, bias=False)),
    ],
)
def test_cell_matches_torch_cell(ours, theirs):
    torch.manual_seed(0)
    reference = theirs()
    cell = ours()
    cell.load_state_dict(reference.state_dict())
    assert [(n, p.shape) for n, p in cell.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()
    ]
    x = torch.randn(B, D, requires_grad=True)
    state = random_state(cell)
    if isinstance(state, tuple):
        state = tuple(s.requires_grad_() for s in state)
        h, (_, c) = cell(x, state)
        h_ref, c_ref = reference(x, state)
        outputs, ref_outputs = h + 2 * c, h_ref + 2 * c_ref
    else:
        state.requires_grad_()
        outputs, ref_outputs = cell(x, state)[0], reference(x, state)
    torch.testing.assert_close(outputs, ref_outputs, **TOLERANCE)
    weights = torch.randn(outputs.shape)
    inputs = [x] + (list(state) if isinstance(state, tuple) else [state])
    grads = torch.autograd.grad((outputs * weights).sum(), inputs + list(cell.parameters()))
    ref_grads = torch.autograd.grad((ref_outputs * weights).sum(), inputs + list(reference.parameters()))
    for ours_grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(ours_grad, ref_grad, **TOLERANCE)


@pytest.mark.parametrize("name", list(CELLS))
def test_gradcheck_float64(name):
    """Analytical gradients (inputs, state and every parameter) against finite differences."""
    torch.manual_seed(0)
    cell = randomise(CELLS[name](dtype=torch.float64))
    names = [n for n, _ in cell.named_parameters()]
    x = torch.randn(2, D, dtype=torch.float64, requires_grad=True)
    state = random_state(cell, 2, torch.float64)
    states = list(state) if isinstance(state, tuple) else [state]
    states = [s.requires_grad_() for s in states]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def two_steps(x, *tensors):
        state = tuple(tensors[: len(states)]) if len(states) > 1 else tensors[0]
        parameters = dict(zip(names, tensors[len(states) :], strict=True))
        h, state = functional_call(cell, parameters, (x, state))
        h, state = functional_call(cell, parameters, (torch.tanh(x), state))  # the state re-enters
        return (h,) + (state if isinstance(state, tuple) else (state,))

    assert torch.autograd.gradcheck(two_steps, (x, *states, *params))


@pytest.mark.parametrize("name", list(CELLS))
def test_unbatched_step_and_zero_state(name):
    torch.manual_seed(0)
    cell = CELLS[name]()
    x = torch.randn(D)
    h, state = cell(x)
    h_batched, state_batched = cell(x.unsqueeze(0))
    torch.testing.assert_close(h, h_batched.squeeze(0))
    assert h.shape == (cell.output_size,)
    h2, _ = cell(x, state)
    torch.testing.assert_close(h2, cell(x.unsqueeze(0), state_batched)[0].squeeze(0))


def test_input_projection_is_the_state_independent_part():
    """forward(x, s) = recur(input_projection(x), s), and the projection of (B, T, D) is per step."""
    torch.manual_seed(0)
    for cell in (randomise(LSTMCell(D, H, layer_norm=True)), randomise(GRUCell(D, H)), randomise(RNNCell(D, H))):
        x = torch.randn(B, T, D)
        projected = cell.input_projection(x)
        assert projected.shape == (B, T, cell.gate_count * H)
        for t in range(T):
            torch.testing.assert_close(projected[:, t], cell.input_projection(x[:, t]))
        state = random_state(cell)
        torch.testing.assert_close(cell(x[:, 0], state)[0], cell.recur(projected[:, 0], state)[0])


def test_forget_bias_and_layer_norm_initialisation():
    cell = LSTMCell(D, H, layer_norm=True, forget_bias=1.0)
    assert torch.all(cell.bias_ih[H : 2 * H] == 1.0) and torch.all(cell.bias_hh[H : 2 * H] == 0.0)
    assert torch.all(cell.ln_ih_weight == 1.0) and torch.all(cell.ln_cell_bias == 0.0)
    bound = 1 / H**0.5
    assert cell.weight_ih.abs().max() <= bound and cell.weight_hh.abs().max() <= bound
    assert "forget_bias=1.0" in repr(cell) and "layer_norm=True" in repr(cell)


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: RNNCell(D, H, nonlinearity="gelu"), r"nonlinearity must be one of \('tanh', 'relu'\), got 'gelu'"),
        (lambda: LSTMCell(0, H), "input_size must be a positive integer, got 0"),
        (lambda: GRUCell(D, 2.5), "hidden_size must be a positive integer, got 2.5"),
        (lambda: LSTMCell(D, H, proj_size=-1), "proj_size must be a non-negative integer, got -1"),
        (lambda: LSTMCell(D, H, proj_size=H), r"proj_size must be smaller than hidden_size \(5\), got 5"),
        (lambda: LSTMCell(D, H, bias=False, forget_bias=1.0), "forget_bias needs bias=True"),
    ],
)
def test_constructor_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_step_errors():
    lstm, gru = LSTMCell(D, H, proj_size=P), GRUCell(D, H)
    x = torch.randn(B, D)
    with pytest.raises(ValueError, match=r"expects an input of shape \(B, 3\) or \(3,\), got \(4, 4\)"):
        gru(torch.randn(B, D + 1))
    with pytest.raises(ValueError, match=r"expects an input .* got \(4, 2, 3\)"):
        gru(torch.randn(B, 2, D))
    with pytest.raises(ValueError, match=r"GRUCell state must have shape \(4, 5\), got \(4, 2\)"):
        gru(x, torch.zeros(B, 2))
    with pytest.raises(ValueError, match=r"LSTMCell state must be a tuple of 2 tensors .* got Tensor"):
        lstm(x, torch.zeros(B, H))
    expected = r"LSTMCell state must have shapes \[\(4, 2\), \(4, 5\)\], got \[\(4, 5\), \(4, 5\)\]"
    with pytest.raises(ValueError, match=expected):
        lstm(x, (torch.zeros(B, H), torch.zeros(B, H)))
