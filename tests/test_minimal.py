"""minGRU / minLSTM: the parallel scan, the sequential loop and the reference step agree (outputs, gradients)."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.minimal import MinGRUCell, MinLSTMCell, g, log_g, parallel_scan
from rnnkit.recurrent import Recurrent

D, H = 3, 5
CELLS = {"mingru": MinGRUCell, "minlstm": MinLSTMCell}


def _run(name: str, scan: str, x, h0, lengths, *, fast_path: bool = True, bidirectional: bool = False):
    torch.manual_seed(0)
    cells = [CELLS[name](D if i < (2 if bidirectional else 1) else H * (2 if bidirectional else 1), H, scan=scan)
             for i in range(4 if bidirectional else 2)]
    recurrent = Recurrent(cells, num_layers=2, bidirectional=bidirectional, fast_path=fast_path)
    states = [h0] + [None] * (len(cells) - 1)
    states = [s if s is not None else c.initial_state(x.shape[0]) for s, c in zip(states, cells, strict=True)]
    output, finals = recurrent(x, states, lengths=lengths)
    weights = torch.sin(torch.arange(output.numel(), dtype=output.dtype)).view(output.shape)
    loss = (output * weights).sum() + sum(f.sum() for f in finals)
    return [output, *finals, *torch.autograd.grad(loss, [x, h0, *recurrent.parameters()])]


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("steps,lengths,bidirectional", [
    (7, None, False), (7, [7, 3, 1], True), (512, None, False), (512, [512, 200, 1], True),
])
def test_parallel_and_sequential_forms_equal_the_reference_step(name, steps, lengths, bidirectional):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, steps, D, generator=generator, requires_grad=True)
    h0 = torch.randn(3, H, generator=generator, requires_grad=True)  # any sign: its term is kept apart
    reference = _run(name, "sequential", x, h0, lengths, fast_path=False, bidirectional=bidirectional)
    for scan in ("parallel", "sequential"):
        results = _run(name, scan, x, h0, lengths, bidirectional=bidirectional)
        for ours, expected in zip(results, reference, strict=True):
            scale = expected.abs().max().clamp_min(1.0)
            torch.testing.assert_close(ours / scale, expected / scale, atol=1e-4, rtol=0)
        if lengths is not None:
            padding = torch.arange(steps) >= torch.tensor(lengths).unsqueeze(1)
            assert torch.all(results[0][padding] == 0)


@pytest.mark.parametrize("name", list(CELLS))
def test_forms_agree_at_2048_steps(name):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2048, D, generator=generator, requires_grad=True)
    h0 = torch.randn(2, H, generator=generator, requires_grad=True)
    sequential = _run(name, "sequential", x, h0, None)
    parallel = _run(name, "parallel", x, h0, None)
    for ours, expected in zip(parallel, sequential, strict=True):
        scale = expected.abs().max().clamp_min(1.0)
        torch.testing.assert_close(ours / scale, expected / scale, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_gradcheck_float64(name, scan):
    torch.manual_seed(0)
    recurrent = Recurrent(lambda d, layer, direction: CELLS[name](d, H, scan=scan, dtype=torch.float64),
                          input_size=D, bidirectional=True)
    x = torch.randn(3, 5, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, H, dtype=torch.float64, requires_grad=True)

    def run(x, h0):
        output, finals = recurrent(x, [h0, torch.zeros_like(h0)], lengths=[5, 2, 1])
        return output, *finals

    assert torch.autograd.gradcheck(run, (x, h0))


def test_chunked_scan_equals_one_block_on_short_sequences():
    generator = torch.Generator().manual_seed(3)
    log_a = -torch.rand(70, 2, 4, generator=generator, dtype=torch.float64)
    log_v = torch.randn(70, 2, 4, generator=generator, dtype=torch.float64)
    h0 = torch.randn(2, 4, generator=generator, dtype=torch.float64)
    expected = torch.empty_like(log_a)
    h = h0
    for t in range(70):
        h = log_a[t].exp() * h + log_v[t].exp()
        expected[t] = h
    for chunk in (None, 1, 7, 32, 100):
        torch.testing.assert_close(parallel_scan(log_a, log_v, h0, chunk=chunk), expected)


@pytest.mark.parametrize("name", list(CELLS))
def test_log_coefficients_are_the_logs_of_the_coefficients(name):
    cell = CELLS[name](D, H, dtype=torch.float64)
    xp = 3 * torch.randn(10, cell.gate_count * H, dtype=torch.float64)
    a, v = cell.coefficients(xp)
    log_a, log_v = cell.log_coefficients(xp)
    torch.testing.assert_close(log_a.exp(), a)
    torch.testing.assert_close(log_v.exp(), v)
    assert torch.all((a > 0) & (a < 1)) and torch.all(v > 0)


def test_g_is_positive_and_continuous_and_log_g_is_its_log():
    k = torch.linspace(-30, 30, 1001, dtype=torch.float64)
    assert torch.all(g(k) > 0)
    torch.testing.assert_close(log_g(k), g(k).log())
    torch.testing.assert_close(g(torch.tensor([0.0, -1e-9])), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(g(torch.tensor([2.0])), torch.tensor([2.5]))


def test_mingru_step_is_the_paper_equation():
    cell = MinGRUCell(D, H)
    x, h = torch.randn(4, D), torch.randn(4, H)
    z = torch.sigmoid(x @ cell.weight_ih[:H].T + cell.bias_ih[:H])
    candidate = g(x @ cell.weight_ih[H:].T + cell.bias_ih[H:])
    torch.testing.assert_close(cell(x, h)[0], (1 - z) * h + z * candidate)


def test_minlstm_step_is_the_paper_equation():
    cell = MinLSTMCell(D, H)
    x, h = torch.randn(4, D), torch.randn(4, H)
    f, i, k = (x @ cell.weight_ih.T + cell.bias_ih).chunk(3, dim=-1)
    f, i = torch.sigmoid(f), torch.sigmoid(i)
    torch.testing.assert_close(cell(x, h)[0], f / (f + i) * h + i / (f + i) * g(k))


def test_exported_and_errors():
    assert rnnkit.MinGRUCell is MinGRUCell and rnnkit.MinLSTMCell is MinLSTMCell
    assert repr(MinLSTMCell(3, 4, scan="sequential")) == "MinLSTMCell(3, 4, scan='sequential')"
    with pytest.raises(ValueError, match="scan must be one of"):
        MinGRUCell(3, 4, scan="fast")
    with pytest.raises(ValueError, match="input of shape"):
        MinGRUCell(3, 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="recurrent_dropout does not apply"):
        Recurrent(MinGRUCell(3, 4), recurrent_dropout=0.5).train()(torch.randn(2, 3, 3))
