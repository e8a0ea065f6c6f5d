"""Speed of rnnkit's recurrent layers against torch.nn, a per-step cell loop and rnnkit's reference path.

Throughput in tokens per second, forward (under no_grad) and forward+backward (the gradients of every
parameter and of the input), for the same inputs and weights, the contenders of a group interleaved round by
round (see benchmarks/harness.py for the timing rules). Each row also shows:

* its fraction of the sgemm peak measured in the same run with the same thread count: a layer's forward
  costs about 2 * tokens * G * H * (D + H) FLOPs (G gates; the input projection and the recurrent product),
  forward+backward 3 times that (dx, dW_ih, dh, dW_hh); for variable lengths tokens are the real tokens;
* the peak RSS of one forward+backward at (B, T, H) = (64, 500, 256), each implementation in a fresh process.

Groups per size (B, T, H = D), baseline (the ratios' denominator) first:

* LSTM, GRU, RNN: torch.nn vs rnnkit (use_fused="auto", the default) vs rnnkit's fast path (own path
  forced) [vs the per-step ``nn.LSTMCell`` loop; vs rnnkit's reference path (the cells' ``recur`` stepped)];
* layer-norm LSTM and reset-before GRU against torch.nn.LSTM of the same size (torch has no such layers; the
  goal is stated against its LSTM), with torch.nn.GRU beside them;
* variable lengths (uniform in [T/4, T]): torch.nn on a PackedSequence (pack, run, unpack) vs rnnkit's
  ``lengths=``.

Usage: ``python -m benchmarks.layers [--quick] [--repeats N] [--threads N] [--sizes B,T,H ...]
[--no-memory] [--output PATH]``, or ``rnnkit bench layers``. Writes benchmarks/results/layers.md
(``--quick``: layers.quick.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from benchmarks.harness import (
    Contender,
    Peak,
    Summary,
    begin,
    load_average,
    machine,
    peak_rss,
    probe,
    rate,
    rounds,
    run_rounds,
    set_threads,
    write_results,
)

SIZES = [(64, 100, 256), (64, 100, 512), (1, 100, 256), (32, 500, 128)]  # (B, T, H = D)
QUICK_SIZES = [(8, 20, 32), (1, 20, 32)]
MEMORY_SIZE = (64, 500, 256)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
RESULTS = Path(__file__).resolve().parent / "results" / "layers.md"


@dataclass
class Group:
    name: str
    contenders: list[Contender]
    tokens: int  # real tokens (without padding)


@dataclass
class Row:
    size: tuple[int, int, int]
    group: str
    label: str
    key: str
    forward: Summary
    backward: Summary
    forward_peak: float  # fraction of the best sgemm FLOP/s
    backward_peak: float


def _layer_run(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None, packed: bool):
    """A closure running ``module`` on x (T, B, D), with variable lengths the torch way or the rnnkit way."""
    parameters = list(module.parameters())

    def run(backward: bool) -> None:
        with torch.set_grad_enabled(backward):
            if lengths is None:
                output, _ = module(x)
            elif packed:  # torch.nn: pack, run, unpack
                sequence = pack_padded_sequence(x, lengths, enforce_sorted=False)
                output, _ = pad_packed_sequence(module(sequence)[0], total_length=x.shape[0])
            else:
                output, _ = module(x, lengths=lengths)
            if backward:
                torch.autograd.grad(output.sum(), parameters + [x])

    run.module = module  # what the row measures (its FLOPs, and tests/test_benchmarks.py's checks)
    return run


def _cell_loop_run(cell: nn.LSTMCell, x: torch.Tensor):
    """The textbook loop: one nn.LSTMCell call per time step."""
    parameters = list(cell.parameters())

    def run(backward: bool) -> None:
        with torch.set_grad_enabled(backward):
            h = x.new_zeros(x.shape[1], cell.hidden_size)
            c = torch.zeros_like(h)
            outputs = []
            for x_t in x.unbind(0):
                h, c = cell(x_t, (h, c))
                outputs.append(h)
            output = torch.stack(outputs)  # (T, B, H)
            if backward:
                torch.autograd.grad(output.sum(), parameters + [x])

    run.module = cell
    return run


def forward_flops(module: nn.Module, tokens: int, hidden: int) -> int:
    """The matrix products of one forward pass of ``module`` over ``tokens`` real tokens, D = H: 2 * tokens * G *
    H * (D + H), G the gate blocks of its own cell (torch.utils.flop_counter agrees: tests/test_benchmarks.py)."""
    mode = "LSTM" if isinstance(module, nn.LSTMCell) else module.mode  # RNN_TANH / RNN_RELU: RNN
    return 2 * tokens * GATES[mode.split("_")[0]] * hidden * (hidden + hidden)


def _copy(module: nn.Module, reference: nn.Module) -> nn.Module:
    module.load_state_dict(reference.state_dict())
    return module


def groups(batch: int, steps: int, hidden: int, package=rnnkit) -> list[Group]:
    """The groups of one size; every contender's ``key`` names it for the memory probe. ``package``: the rnnkit
    whose layers are measured (benchmarks/layers_ab.py passes an earlier commit's beside this one)."""
    torch.manual_seed(0)
    x = torch.randn(steps, batch, hidden, requires_grad=True)  # (T, B, D)
    tokens = batch * steps
    result = []
    for name, theirs, ours in (("LSTM", nn.LSTM, package.LSTM), ("GRU", nn.GRU, package.GRU),
                               ("RNN", nn.RNN, package.RNN)):
        reference = theirs(hidden, hidden)
        contenders = [
            Contender(f"torch.nn.{name}", _layer_run(reference, x, None, False), f"torch.nn.{name}"),
            Contender(f"rnnkit.{name}", _layer_run(_copy(ours(hidden, hidden), reference), x, None, False),
                      f"rnnkit.{name}"),
            Contender(f"rnnkit.{name} fast path", _layer_run(
                _copy(ours(hidden, hidden, use_fused=False), reference), x, None, False), f"rnnkit.{name} fast"),
        ]
        if name == "LSTM":
            contenders.append(Contender("nn.LSTMCell loop", _cell_loop_run(nn.LSTMCell(hidden, hidden), x),
                                        "nn.LSTMCell loop"))
        if name == "GRU":
            slow = _copy(ours(hidden, hidden, use_fused=False, use_fast_path=False), reference)
            contenders.append(Contender("rnnkit.GRU reference path", _layer_run(slow, x, None, False),
                                        "rnnkit.GRU reference"))
        result.append(Group(name, contenders, tokens))
    result.append(Group("layer-norm LSTM, reset-before GRU", [
        Contender("torch.nn.LSTM", _layer_run(nn.LSTM(hidden, hidden), x, None, False), "torch.nn.LSTM"),
        Contender("rnnkit.LSTM(layer_norm=True)", _layer_run(package.LSTM(hidden, hidden, layer_norm=True), x,
                                                             None, False), "rnnkit.LSTM layer_norm"),
        Contender("rnnkit.LSTM(layer_norm=True) reference path", _layer_run(
            package.LSTM(hidden, hidden, layer_norm=True, use_fast_path=False), x, None, False),
            "rnnkit.LSTM layer_norm reference"),
        Contender("rnnkit.GRU(reset_after=False)", _layer_run(package.GRU(hidden, hidden, reset_after=False), x,
                                                              None, False), "rnnkit.GRU reset_before"),
        Contender("torch.nn.GRU", _layer_run(nn.GRU(hidden, hidden), x, None, False), "torch.nn.GRU"),
    ], tokens))
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(max(1, steps // 4), steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    for name, theirs, ours in (("LSTM", nn.LSTM, package.LSTM), ("GRU", nn.GRU, package.GRU),
                               ("RNN", nn.RNN, package.RNN)):
        reference = theirs(hidden, hidden)
        result.append(Group(f"{name}, variable lengths", [
            Contender(f"torch.nn.{name} + PackedSequence", _layer_run(reference, x, lengths, True),
                      f"torch.nn.{name} packed"),
            Contender(f"rnnkit.{name} lengths=", _layer_run(_copy(ours(hidden, hidden), reference), x, lengths,
                                                            False), f"rnnkit.{name} lengths"),
            Contender(f"rnnkit.{name} lengths= fast path", _layer_run(
                _copy(ours(hidden, hidden, use_fused=False), reference), x, lengths, False),
                f"rnnkit.{name} lengths fast"),
        ], int(lengths.sum())))
    return result


def measure(sizes, repeats: int, min_seconds: float, log=print) -> tuple[list[Row], Peak]:
    """Run every group of every size; return its rows and the sgemm peak measured between the rounds."""
    peak = Peak(min_seconds)
    rows: list[Row] = []
    for size in sizes:
        for group in groups(*size):
            log(f"  {size} {group.name} ...")
            run_rounds(group.contenders, repeats, min_seconds, peak)
            batch, steps, hidden = size
            baseline = group.contenders[0]
            for contender in group.contenders:
                flops = forward_flops(contender.run.module, group.tokens, hidden)  # its own cell's G
                forward = Summary.of(contender.seconds[False], baseline.seconds[False], group.tokens)
                backward = Summary.of(contender.seconds[True], baseline.seconds[True], group.tokens)
                rows.append(Row(size, group.name, contender.label, contender.key, forward, backward,
                                flops * forward.median / group.tokens / peak.best,
                                3 * flops * backward.median / group.tokens / peak.best))
    return rows, peak


def memory(keys: list[str], threads: int, log=print) -> dict[str, dict]:
    """Peak RSS of forward+backward at MEMORY_SIZE for each contender key, one fresh process each."""
    result = {}
    for key in keys:
        log(f"  peak RSS of {key} at {MEMORY_SIZE} ...")
        figures = peak_rss("layers", key, threads)
        if figures is not None:
            result[key] = figures
    return result


def _memory_probe(key: str) -> dict:
    for group in groups(*MEMORY_SIZE):
        for contender in group.contenders:
            if contender.key == key:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return probe(contender.run)
    raise SystemExit(f"no contender {key!r}")


# -- the goals of issue 7, checked from the rows -----------------------------------------------------------------


def goals(rows: list[Row]) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for the layer goals that the rows measure."""
    checks = []

    def find(label: str, group: str, sizes=None) -> list[Row]:
        return [r for r in rows if r.label == label and r.group == group and (sizes is None or r.size in sizes)]

    standard = [r for name in ("LSTM", "GRU", "RNN") for r in find(f"rnnkit.{name}", name)]
    standard += [r for name in ("LSTM", "GRU", "RNN") for r in find(f"rnnkit.{name} lengths=",
                                                                     f"{name}, variable lengths")]
    if standard:
        worst = min(standard, key=lambda r: min(r.forward.ratio, r.backward.ratio))
        value = min(worst.forward.ratio, worst.backward.ratio)
        checks.append(("standard LSTM/GRU/RNN >= 0.95x torch.nn, fwd and fwd+bwd, every size and variable "
                       "lengths", f"lowest {value:.2f}x ({worst.label}, {_size(worst.size)}, "
                       f"{'fwd' if worst.forward.ratio <= worst.backward.ratio else 'fwd+bwd'})", value >= 0.95))
    large = [(64, 100, 256), (64, 100, 512)]
    for label in ("rnnkit.LSTM(layer_norm=True)", "rnnkit.GRU(reset_after=False)"):
        found = find(label, "layer-norm LSTM, reset-before GRU", large)
        if found:
            value = min(r.backward.ratio for r in found)
            checks.append((f"{label} >= 0.8x torch.nn.LSTM fwd+bwd at H = 256 and 512",
                           ", ".join(f"{r.backward.ratio:.2f}x at H={r.size[2]}" for r in found), value >= 0.8))
    found = find("rnnkit.GRU", "GRU")
    if found:
        value = min(r.backward.ratio for r in found)
        checks.append(("rnnkit.GRU >= 1.15x torch.nn.GRU fwd+bwd",
                       ", ".join(f"{r.backward.ratio:.2f}x at {_size(r.size)}" for r in found), value >= 1.15))
    return checks


# -- the table ------------------------------------------------------------------------------------------------


def _size(size) -> str:
    return ", ".join(str(v) for v in size)


def table(rows: list[Row], peak: Peak, memory_figures: dict[str, dict], *, repeats: int, threads: int,
          min_seconds: float, load_before: str, load_after: str, command: str) -> str:
    lines = [
        "# rnnkit layers vs torch.nn",
        "",
        f"`{command}`: torch {torch.__version__}, {machine()}, "
        f"{threads} thread(s), float32. {repeats} rounds, each timing every contender once per mode (>= "
        f"{min_seconds} s of calls) in a rotated order. Load average (1, 5, 15 min) before: {load_before}; "
        f"after: {load_after}.",
        "",
        f"sgemm peak at {threads} thread(s), best of {len(peak.samples)} timings (1024^3 and 2048^3) taken "
        f"between the rounds: **{peak.best / 1e9:.1f} GFLOP/s** (median {peak.median / 1e9:.1f}).",
        "",
        "Throughput in tokens/s: median over rounds, (min-max) over rounds. `x torch`: median over rounds of "
        "the group's first row's time / this row's time, taken in the same round. `% peak`: "
        "2*tokens*G*H*(D+H) FLOPs forward, 3x that forward+backward, over the sgemm peak. Peak RSS: one "
        f"forward+backward at (B, T, H) = ({_size(MEMORY_SIZE)}) in a fresh process (VmHWM; in brackets "
        "the increase over the process's RSS before the call).",
        "",
        "| B, T, H=D | group | implementation | fwd tok/s (min-max) | fwd x torch | fwd % peak "
        "| fwd+bwd tok/s (min-max) | fwd+bwd x torch | fwd+bwd % peak | peak RSS MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        figures = memory_figures.get(r.key)
        rss = ""
        if figures is not None:
            rss = f"{figures['peak_mib']:,.0f} (+{figures['peak_mib'] - figures['before_mib']:,.0f})"
        lines.append(
            f"| {_size(r.size)} | {r.group} | {r.label} | {rate(r.forward.median)} ({rate(r.forward.low)}-"
            f"{rate(r.forward.high)}) | {r.forward.ratio:.2f} | {100 * r.forward_peak:.0f}% | "
            f"{rate(r.backward.median)} ({rate(r.backward.low)}-{rate(r.backward.high)}) | "
            f"{r.backward.ratio:.2f} | {100 * r.backward_peak:.0f}% | {rss} |"
        )
    checks = goals(rows)
    if checks:
        lines += ["", "## Goals (issue 7) measured by this run", "", "| goal | measured | met |", "|---|---|---|"]
        lines += [f"| {goal} | {value} | {'yes' if met else 'no'} |" for goal, value, met in checks]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit bench layers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 2 rounds of >= 0.02 s, no memory probe (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--sizes", nargs="+", default=None, metavar="B,T,H", help="sizes to run (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS probes")
    parser.add_argument("--output", type=Path, default=None, help=f"markdown table (default {RESULTS})")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one RSS probe
    args = parser.parse_args(argv)
    set_threads(parser, args.threads)
    if args.memory_probe is not None:
        print(json.dumps(_memory_probe(args.memory_probe)))
        return 0
    repeats = rounds(parser, args.repeats, args.quick)
    try:
        sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else None
    except ValueError:
        parser.error(f"--sizes takes B,T,H triples of integers, got {args.sizes}")
    if sizes is not None and any(len(s) != 3 or min(s) < 1 for s in sizes):
        parser.error(f"--sizes takes B,T,H triples of positive integers, got {args.sizes}")
    sizes = sizes or (QUICK_SIZES if args.quick else SIZES)
    output, min_seconds, load_before = begin(args.output, RESULTS, args.quick, repeats)
    threads = torch.get_num_threads()

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, peak = measure(sizes, repeats, min_seconds, log=log)
    figures = {}
    if not (args.quick or args.no_memory):
        figures = memory(list(dict.fromkeys(r.key for r in rows)), threads, log=log)
    command = " ".join(["python -m benchmarks.layers", *(sys.argv[1:] if argv is None else argv)])
    text = table(rows, peak, figures, repeats=repeats, threads=threads, min_seconds=min_seconds,
                 load_before=load_before, load_after=load_average(), command=command)
    write_results(text, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
