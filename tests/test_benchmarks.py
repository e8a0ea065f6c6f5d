"""The benchmark machinery (benchmarks/): timing summaries, the goal checks, and that every contender runs."""

from __future__ import annotations

import json

import pytest

from benchmarks import harness, layers, minimal


def test_summary_is_median_range_and_paired_ratio():
    summary = harness.Summary.of([2.0, 1.0, 4.0], baseline=[2.0, 2.0, 2.0], units=100.0)
    assert summary.median == 50.0  # 100 units / the median 2.0 s
    assert (summary.low, summary.high) == (25.0, 100.0)
    assert summary.ratio == 1.0  # median of 2/2, 2/1, 2/4


def test_peak_is_the_best_timing():
    peak = harness.Peak(min_seconds=0.0)
    peak.measure()
    peak.measure()
    assert len(peak.samples) == 4 and peak.best == max(peak.samples) >= peak.median > 0


def test_rate_and_load():
    assert [harness.rate(v) for v in (46700.4, 467.04, 4.6704)] == ["46,700", "467.0", "4.67"]
    assert harness.load_average().count(",") == 2 or harness.load_average() == "unknown"


def test_every_layer_contender_runs_forward_and_backward():
    for group in layers.groups(2, 3, 4):
        assert group.contenders[0].label.startswith("torch.nn"), "the baseline comes first"
        for contender in group.contenders:
            contender.run(False)
            contender.run(True)


def test_every_minimal_contender_runs():
    for contender in minimal.contenders(2, 5, 4):
        contender.run(False)
        contender.run(True)


def _row(label, group, size, forward, backward):
    summary = lambda ratio: harness.Summary(1.0, 1.0, 1.0, ratio)  # noqa: E731
    return layers.Row(size, group, label, label, summary(forward), summary(backward), 0.5, 0.5)


def test_goal_checks_read_the_right_rows():
    rows = [
        _row("rnnkit.LSTM", "LSTM", (64, 100, 256), 1.0, 0.99),
        _row("rnnkit.GRU", "GRU", (64, 100, 256), 1.0, 1.2),
        _row("rnnkit.RNN", "RNN", (64, 100, 256), 0.97, 1.0),
        _row("rnnkit.LSTM lengths=", "LSTM, variable lengths", (64, 100, 256), 0.96, 2.0),
        _row("rnnkit.LSTM(layer_norm=True)", "layer-norm LSTM, reset-before GRU", (64, 100, 256), 0.5, 0.79),
        _row("rnnkit.GRU(reset_after=False)", "layer-norm LSTM, reset-before GRU", (64, 100, 256), 0.9, 0.9),
    ]
    checks = {goal.split(" >=")[0]: (value, met) for goal, value, met in layers.goals(rows)}
    assert checks["standard LSTM/GRU/RNN"] == ("lowest 0.96x (rnnkit.LSTM lengths=, 64, 100, 256, fwd)", True)
    assert checks["rnnkit.LSTM(layer_norm=True)"] == ("0.79x at H=256", False)
    assert checks["rnnkit.GRU(reset_after=False)"][1] is True
    assert checks["rnnkit.GRU"] == ("1.20x at 64, 100, 256", True)


@pytest.mark.parametrize("module", [layers, minimal])
def test_memory_probe_prints_json(module, capsys, monkeypatch):
    """The probe a subprocess runs (here in-process, at a tiny size): RSS before and peak, in MiB."""
    monkeypatch.setattr(module, "MEMORY_SIZE", (2, 3, 4))
    key = "torch.nn.GRU"
    assert module.main(["--memory-probe", key]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["peak_mib"] >= figures["before_mib"] > 0


def test_linear_benchmark_quick_table(tmp_path):
    """The products' benchmark at tiny sizes: one row per product, each saying what rnnkit.fast.products uses."""
    from benchmarks import linear as products
    from rnnkit import linear

    if not linear._SUPPORTED:
        pytest.skip("this torch has no oneDNN build: the benchmark refuses to run")
    output = tmp_path / "linear.md"
    assert products.main(["--quick", "--output", str(output)]) == 0
    rows = [line for line in output.read_text().splitlines() if line.startswith("| 16 |")]
    assert len(rows) == 5 and all(row.endswith("| torch.mm |") for row in rows)  # all below MIN_MACS


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_seq2seq_training_flops_match_torchs_flop_counter(cell):
    """The seq2seq benchmark's analytic FLOPs of a training step against torch.utils.flop_counter, counting the
    matrix products (forward and backward) of the reference path (every RNN stepped with autograd's mm), with
    full-length sources, where the two count the same rows."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks import seq2seq

    sizes = dict(seq2seq.QUICK, cell=cell, min_source_length=seq2seq.QUICK["source_length"])
    src, lengths, tgt_in, tgt_out = seq2seq._data(**sizes)
    model = seq2seq._model(**sizes)
    for rnn in (model.encoder.rnn, model.decoder.rnn):
        rnn.use_fused, rnn.use_fast_path = False, False
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(src, lengths, tgt_in)
        F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten()).backward()
    counted = counter.get_total_flops()
    # the encoder's zero initial state needs no gradient: torch skips that one product per direction
    skipped = 2 * 2 * sizes["batch"] * model.encoder.rnn.weight_hh_l0.numel()
    assert sum(seq2seq.training_flops(model, lengths, tgt_in.shape[1])) == pytest.approx(counted + skipped, rel=1e-9)


def test_seq2seq_benchmark_quick_table(tmp_path):
    """The seq2seq benchmark at tiny sizes: its rows, % peak, the shared part and the goals' bounds."""
    from benchmarks import seq2seq

    output = tmp_path / "seq2seq.md"
    assert seq2seq.main(["--quick", "--output", str(output)]) == 0
    text = output.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| tiny (smoke test) |")]
    assert [row.split(" | ")[1] for row in rows] == ["training, step loop", "training, fast path (one RNN call)",
                                                      "shared part only (encoder, Adam)"]
    assert rows[0].split(" | ")[3] == "1.00" and rows[1].endswith("% |") and rows[2].endswith("|  |")
    assert "at most" in text and "beam 5 on a batch of 64" in text
