"""The benchmark machinery (benchmarks/): timing summaries, the goal checks, and that every contender runs."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils.flop_counter import FlopCounterMode

import rnnkit
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


def test_layers_ab_alternates_call_by_call():
    from benchmarks.layers_ab import alternate

    calls = []
    ratios = alternate(lambda backward: calls.append(("before", backward)),
                       lambda backward: calls.append(("after", backward)), True, seconds=0.0)
    assert len(ratios) == 5 and all(r > 0 for r in ratios)
    assert calls[:4] == [("before", True), ("after", True)] * 2  # warm-up
    pairs = [tuple(name for name, _ in calls[i : i + 2]) for i in range(4, len(calls), 2)]
    assert pairs == [("before", "after"), ("after", "before")] * 2 + [("before", "after")]  # neither always first


class Calls:
    """Records, while active, every module call (module, args, kwargs) and every call of a cell's ``recur``
    (the reference path steps the cells; the fast path and torch's kernels do not)."""

    def __enter__(self):
        self.modules, self.recur = [], 0
        self.hook = register_module_forward_hook(
            lambda module, args, kwargs, output: self.modules.append((module, args, kwargs)), with_kwargs=True)
        self.originals = {cls: cls.recur for cls in (rnnkit.LSTMCell, rnnkit.GRUCell, rnnkit.RNNCell)}
        for cls, original in self.originals.items():
            cls.recur = lambda cell, *args, _original=original: self.count(_original, cell, *args)
        return self

    def count(self, original, cell, *args):
        self.recur += 1
        return original(cell, *args)

    def __exit__(self, *exc):
        self.hook.remove()
        for cls, original in self.originals.items():
            cls.recur = original


LABEL = re.compile(r"(?:(torch\.nn|rnnkit)\.(LSTM|GRU|RNN)(?:\((layer_norm|reset_after)=(True|False)\))?"
                   r"( \+ PackedSequence| lengths=)?( fast path| reference path)?|nn\.LSTMCell loop)")


def test_every_layer_contender_runs_the_module_its_label_names():
    """Each row measures what its label says: the class named, its options, the path (torch's kernel, the fast
    path, the reference path stepping the cells), the input (lengths= or a PackedSequence), and, where the
    label promises the same layer, the baseline's weights and outputs."""
    B, T, H = 3, 4, 5
    for group in layers.groups(B, T, H):
        baseline = group.contenders[0]
        assert baseline.label.startswith("torch.nn"), "the baseline comes first"
        for contender in group.contenders:
            label, module = contender.label, contender.run.module
            match = LABEL.fullmatch(label)
            assert match, f"unexpected label {label!r}"
            origin, name, option, value, variable, path = match.groups()
            with Calls() as calls:
                contender.run(True)
            called, args, kwargs = calls.modules[-1]  # the outermost call ends last
            assert called is module, label
            if origin is None:  # the textbook loop: one nn.LSTMCell call per step
                assert type(module) is nn.LSTMCell and len(calls.modules) == T
                continue
            assert type(module) is getattr(nn if origin == "torch.nn" else rnnkit, name), label
            if option is not None:
                assert getattr(module, option) is (value == "True"), label
            lengths = kwargs.get("lengths")
            assert isinstance(args[0], PackedSequence) == (variable == " + PackedSequence"), label
            assert (lengths is not None and int(lengths.min()) < T) == (variable == " lengths="), label
            if origin == "rnnkit":
                fused = module.uses_fused_kernel(grad=True, variable_lengths=variable is not None)
                assert module.use_fast_path == (path != " reference path"), label
                assert calls.recur == (T if path == " reference path" else 0), label  # it stepped the cells
                if path == " fast path":
                    assert module.use_fused is False and not fused, label
                if path is None:  # the default dispatch: torch's kernel exactly where the rule says
                    assert module.use_fused == "auto", label
                    assert fused == (name == "LSTM" and variable is None and option is None), label
            same_layer = option is None and type(baseline.run.module).__name__ == name
            if same_layer:  # the same weights as the baseline, so the same function of the same input
                torch.testing.assert_close(module.state_dict(), baseline.run.module.state_dict())
                with torch.no_grad():
                    ours = unpacked(module(*args, **kwargs)[0], T)
                    theirs = unpacked(baseline.run.module(*_baseline_args(group, B, T))[0], T)
                torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def unpacked(output, T):
    return pad_packed_sequence(output, total_length=T)[0] if isinstance(output, PackedSequence) else output


def _baseline_args(group, B, T):
    with Calls() as calls:
        group.contenders[0].run(False)
    return calls.modules[-1][1]


@pytest.mark.parametrize("size", [(3, 5, 4), (1, 7, 6)])
def test_layer_rows_count_the_flops_their_own_module_computes(size):
    """% peak divides each row's FLOPs by the sgemm peak: forward_flops must be what the row's module computes,
    counted by torch.utils.flop_counter on the reference path of the same cell (products stepped with autograd's
    mm; torch's LSTM kernel runs in oneDNN, where the counter sees nothing) and, for variable lengths, on the
    real tokens, as torch's packed kernels compute them. Forward+backward: 3x, less at most the first step's
    dL/dh_0 (of a zero initial state nobody asks the gradient of)."""
    B, T, H = size
    for group in layers.groups(B, T, H):
        for contender in group.contenders:
            module = contender.run.module
            if isinstance(module, nn.LSTMCell):
                reference, options = rnnkit.LSTM, {}
            else:
                name = type(module).__name__
                reference = getattr(rnnkit, name)
                options = {key: getattr(module, key) for key in ("layer_norm", "reset_after") if hasattr(module, key)}
                if name == "RNN":
                    options["nonlinearity"] = module.nonlinearity
            twin = reference(H, H, use_fused=False, use_fast_path=False, **options)
            x = torch.randn(T, B, H, requires_grad=True)
            forward, both = FlopCounterMode(display=False), FlopCounterMode(display=False)
            with forward:
                twin(x)
            with both:
                twin(x)[0].sum().backward()
            gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[reference.__name__]
            first_step_dh = 2 * B * gates * H * H  # dL/dh_0 of the zero initial state: skipped where not needed
            expected = layers.forward_flops(module, B * T, H)
            assert forward.get_total_flops() == expected, contender.label
            assert 0 <= 3 * expected - both.get_total_flops() <= first_step_dh, contender.label
            if "lengths" in contender.label or "Packed" in contender.label:  # real tokens only
                lengths = _lengths_of(contender)
                counter = FlopCounterMode(display=False)
                with counter:
                    nn.GRU(H, H)(pack_padded_sequence(x, lengths, enforce_sorted=False))
                assert layers.forward_flops(nn.GRU(H, H), group.tokens, H) == counter.get_total_flops()
                assert group.tokens == int(lengths.sum())


def _lengths_of(contender):
    with Calls() as calls:
        contender.run(False)
    args, kwargs = calls.modules[-1][1:]
    return kwargs["lengths"] if "lengths" in kwargs else torch.tensor(
        [int((args[0].batch_sizes > b).sum()) for b in range(int(args[0].batch_sizes[0]))])[
        args[0].unsorted_indices]


MINIMAL = {
    "torch.nn.GRU": (nn.GRU, {}), "torch.nn.LSTM": (nn.LSTM, {}), "rnnkit.GRU": (rnnkit.GRU, {"use_fused": "auto"}),
    "minGRU, parallel scan": (rnnkit.MinGRUCell, {"scan": "parallel", "chunk": 16}),
    "minGRU, parallel scan in one block": (rnnkit.MinGRUCell, {"scan": "parallel", "chunk": None}),
    "minGRU, sequential": (rnnkit.MinGRUCell, {"scan": "sequential"}),
    "minLSTM, parallel scan": (rnnkit.MinLSTMCell, {"scan": "parallel", "chunk": 16}),
    "minLSTM, sequential": (rnnkit.MinLSTMCell, {"scan": "sequential"}),
}


def test_every_minimal_contender_runs_the_module_its_label_names():
    B, T, H = 2, 5, 4
    contenders = minimal.contenders(B, T, H)
    assert [c.label for c in contenders] == list(MINIMAL)
    for contender in contenders:
        kind, options = MINIMAL[contender.label]
        module = contender.run.module
        if kind in (rnnkit.MinGRUCell, rnnkit.MinLSTMCell):
            assert type(module) is rnnkit.Recurrent and len(module.cells) == 1
            module = module.cells[0]
        assert type(module) is kind, contender.label
        for key, value in options.items():
            assert getattr(module, key) == value, (contender.label, key)
        with Calls() as calls:
            contender.run(True)
        assert calls.modules[-1][0] is contender.run.module, contender.label  # the call timed is this module's
        assert tuple(calls.modules[-1][1][0].shape) == (T, B, H)


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
    from rnnkit.fast import dispatch

    if not dispatch.ONEDNN_SUPPORTED:
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
