"""rnnkit.fast.dispatch (the one place a path is chosen) and rnnkit.explain; rnnkit.fast.lengths."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.fast import dispatch, native
from rnnkit.fast.lengths import Lengths


def test_explain_says_which_path_a_call_takes_and_why():
    gru = rnnkit.GRU(28, 128, batch_first=True)
    x = torch.randn(32, 28, 28)
    training = rnnkit.explain(gru, x)
    assert training.path == "fast" and "weight gradients step by step" in training.reasons[0]
    assert set(training.cells) == {"l0"} and training.cells["l0"].startswith("fast")
    if native.has_blas():
        assert "the step loop in C" in training.cells["l0"]
    with torch.no_grad():
        inference = rnnkit.explain(gru, x)
    assert inference.path == "fused" and "no gradients" in inference.reasons[0]
    text = str(training)
    assert text.startswith("GRU(28, 128, batch_first=True): fast path") and "native kernels:" in text


def test_explain_follows_the_layer_options():
    x = torch.randn(5, 3, 8)
    assert rnnkit.explain(rnnkit.LSTM(8, 16), x).path == "fused"  # an LSTM without lengths keeps torch's kernel
    assert rnnkit.explain(rnnkit.LSTM(8, 16), x, lengths=[5, 2, 4]).path == "fast"
    assert rnnkit.explain(rnnkit.LSTM(8, 16, use_fused=False), x).path == "fast"
    assert rnnkit.explain(rnnkit.LSTM(8, 16, use_fused=True), x, lengths=[5, 2, 4]).path == "fused"
    reference = rnnkit.explain(rnnkit.GRU(8, 16, use_fused=False, use_fast_path=False), x)
    assert reference.path == "reference" and "use_fast_path=False" in reference.cells["l0"]
    layer_norm = rnnkit.explain(rnnkit.LSTM(8, 16, layer_norm=True, bidirectional=True), x)
    assert layer_norm.path == "fast" and set(layer_norm.cells) == {"l0", "l0_reverse"}
    assert "layer norm" in layer_norm.reasons[0] or "extra" in layer_norm.reasons[0]
    zoneout = rnnkit.explain(rnnkit.GRU(8, 16, zoneout=0.1), x)
    assert zoneout.path == "reference" and "zoneout" in zoneout.cells["l0"]
    projection = rnnkit.explain(rnnkit.LSTM(8, 16, proj_size=4, use_fused=False), x)
    assert projection.path == "reference" and "projection" in projection.cells["l0"]
    packed = pack_padded_sequence(x, torch.tensor([5, 2, 4]), enforce_sorted=False)
    assert rnnkit.explain(rnnkit.GRU(8, 16), packed).path == "fast"  # gradients + variable lengths


def test_explain_of_recurrent_and_of_a_hooked_cell():
    cell = rnnkit.GRUCell(8, 16)
    recurrent = rnnkit.Recurrent(cell)
    x = torch.randn(3, 5, 8)
    assert rnnkit.explain(recurrent, x).path == "fast"
    handle = cell.register_step_hook(lambda cell, step: None)
    hooked = rnnkit.explain(recurrent, x)
    assert hooked.path == "reference" and "step hook" in hooked.cells["l0"]
    handle.remove()
    with pytest.raises(ValueError, match="explain expects an rnnkit LSTM, GRU, RNN or Recurrent, got LSTM"):
        rnnkit.explain(torch.nn.LSTM(8, 16), x)


def test_a_step_hook_puts_a_layer_on_the_reference_path_and_sees_every_step():
    """The hook mechanism diagnostics records through: every step's gates from the cell's own gates()."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 4, bidirectional=True)
    x = torch.randn(6, 2, 3)
    steps = []
    handles = [cell.register_step_hook(lambda cell, step: steps.append(step)) for cell in layer.cells]
    assert not layer.uses_fused_kernel(grad=False)
    output, _ = layer(x)
    for handle in handles:
        handle.remove()
    assert len(steps) == 12 and set(steps[0].gates) == {"input", "forget", "candidate", "output"}
    expected, _ = layer(x)
    torch.testing.assert_close(output, expected)
    # the hooked step's h_t is the layer's output at that step (forward direction)
    torch.testing.assert_close(torch.stack([s.h_t for s in steps[:6]]), output[..., :4])


def test_layer_path_rule():
    """use_fused="auto": torch's kernel without gradients, for an LSTM without lengths and with dropout between
    layers in training; the fast path for gradients through the GRU/RNN or with variable lengths."""
    gru, lstm = rnnkit.GRU(3, 4, num_layers=2, dropout=0.2), rnnkit.LSTM(3, 4)
    assert dispatch.layer_path(gru.eval(), grad=True, variable_lengths=False).path == "own"
    assert dispatch.layer_path(gru.eval(), grad=False, variable_lengths=True).path == "fused"
    assert dispatch.layer_path(gru.train(), grad=True, variable_lengths=False).path == "fused"  # torch's dropout
    assert dispatch.layer_path(lstm, grad=True, variable_lengths=False).path == "fused"
    assert dispatch.layer_path(lstm, grad=True, variable_lengths=True).path == "own"
    assert dispatch.layer_path(rnnkit.RNN(3, 4, residual=True, use_fused=True), grad=False,
                               variable_lengths=False).path == "own"


def test_override_checks_its_arguments():
    with pytest.raises(ValueError, match="loop must be one of"):
        with dispatch.override(loop="gpu"):
            pass
    with pytest.raises(ValueError, match="products must be 'onednn' or 'torch'"):
        with dispatch.override(products="mkl"):
            pass
    with dispatch.override(loop="torch-ops"):
        assert dispatch.step_loop(torch.zeros(2, 3)) == "torch-ops"
    assert dispatch.step_loop(torch.zeros(2, 3, dtype=torch.float64)) == "torch-ops"


# ---- Lengths: built once, everything derived from it ----


def test_lengths_derive_what_packing_does():
    lengths = Lengths.of([3, 5, 1, 4], 4, 5, "cpu")
    packed = pack_padded_sequence(torch.zeros(5, 4, 1), torch.tensor([3, 5, 1, 4]), enforce_sorted=False)
    assert lengths.batch_sizes == packed.batch_sizes.tolist()
    assert torch.equal(lengths.order, packed.sorted_indices)
    assert torch.equal(lengths.inverse, packed.unsorted_indices)
    assert lengths.valid.shape == (5, 4, 1) and lengths.valid[:, :, 0].sum(0).tolist() == [3, 5, 1, 4]
    # the reversal of each valid prefix: sequence 0 (length 3) reads steps 2, 1, 0, then its padding 3, 4
    assert lengths.reverse_index[:, 0, 0].tolist() == [2, 1, 0, 3, 4]
    ordered = lengths.sorted()
    assert ordered.lengths.tolist() == [5, 4, 3, 1] and ordered.order is None
    assert ordered.batch_sizes == lengths.batch_sizes


def test_lengths_of_a_full_batch_are_none_and_bad_lengths_are_refused():
    assert Lengths.of([5, 5], 2, 5, "cpu") is None
    with pytest.raises(ValueError, match="lengths must be at most the number of time steps T=5, got 6"):
        Lengths.of([6, 2], 2, 5, "cpu")
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        Lengths.of([3], 2, 5, "cpu")


def test_lengths_are_sorted_once_per_call(monkeypatch):
    """A two-layer bidirectional layer with lengths computes n_t per step once, not once per layer-direction."""
    calls = []
    original = torch.Tensor.tolist

    def counting(tensor):
        calls.append(tuple(tensor.shape))
        return original(tensor)

    layer = rnnkit.GRU(3, 4, num_layers=2, bidirectional=True, use_fused=False)
    x = torch.randn(6, 4, 3)
    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    layer(x, lengths=[6, 2, 5, 1])
    assert calls.count((6,)) == 1  # the (T,) count of running sequences, turned into n_t once
