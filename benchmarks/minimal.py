"""minGRU and minLSTM (Feng et al. 2024) against GRU and LSTM on long sequences, as measured on this CPU.

For (B, T, H = D) = (64, 512, 64) and (64, 2048, 64) (the sizes of the issue; the paper's speed-ups are on
GPUs, where the parallel scan's T log T work runs wide), forward (no_grad) and forward+backward milliseconds
per call, median (min-max) over interleaved rounds (benchmarks/harness.py), of:

* torch.nn.GRU (the baseline of the ratios), torch.nn.LSTM, rnnkit.GRU (its default path);
* ``rnnkit.Recurrent(MinGRUCell)``/``MinLSTMCell`` with ``scan="parallel"`` (Heinsen's log-space scan in blocks
  of 16 steps, the default), ``chunk=None`` (the plain closed form over all T in one block: fewer operations,
  less precise) and ``scan="sequential"`` (one addcmul per step, hand-written backward).

Also the peak RSS of one forward+backward at (64, 2048, 64), each implementation in a fresh process.

Usage: ``python -m benchmarks.minimal [--quick] [--repeats N] [--threads N] [--no-memory] [--output PATH]`` or
``rnnkit bench minimal``. Writes benchmarks/results/minimal.md (``--quick``: minimal.quick.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

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
    rounds,
    run_rounds,
    set_threads,
    write_results,
)

SIZES = [(64, 512, 64), (64, 2048, 64)]
QUICK_SIZES = [(4, 64, 16)]
MEMORY_SIZE = (64, 2048, 64)
RESULTS = Path(__file__).resolve().parent / "results" / "minimal.md"


def _run(module: nn.Module, x: torch.Tensor):
    parameters = list(module.parameters())

    def run(backward: bool) -> None:
        with torch.set_grad_enabled(backward):
            output, _ = module(x)
            if backward:
                torch.autograd.grad(output.sum(), parameters + [x])

    run.module = module  # what the row measures (tests/test_benchmarks.py checks it against the label)
    return run


def contenders(batch: int, steps: int, hidden: int) -> list[Contender]:
    torch.manual_seed(0)
    x = torch.randn(steps, batch, hidden, requires_grad=True)  # (T, B, D)

    def minimal(cell, **options):
        return rnnkit.Recurrent(cell(hidden, hidden, **options), batch_first=False)

    entries = [
        ("torch.nn.GRU", nn.GRU(hidden, hidden)),
        ("torch.nn.LSTM", nn.LSTM(hidden, hidden)),
        ("rnnkit.GRU", rnnkit.GRU(hidden, hidden)),
        ("minGRU, parallel scan", minimal(rnnkit.MinGRUCell)),
        ("minGRU, parallel scan in one block", minimal(rnnkit.MinGRUCell, chunk=None)),
        ("minGRU, sequential", minimal(rnnkit.MinGRUCell, scan="sequential")),
        ("minLSTM, parallel scan", minimal(rnnkit.MinLSTMCell)),
        ("minLSTM, sequential", minimal(rnnkit.MinLSTMCell, scan="sequential")),
    ]
    return [Contender(label, _run(module, x), label) for label, module in entries]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit bench minimal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny size, 2 rounds, no memory probe")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS probes")
    parser.add_argument("--output", type=Path, default=None, help=f"markdown table (default {RESULTS})")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    set_threads(parser, args.threads)
    if args.memory_probe is not None:
        found = [c for c in contenders(*MEMORY_SIZE) if c.key == args.memory_probe]
        if not found:
            raise SystemExit(f"no contender {args.memory_probe!r}")
        print(json.dumps(probe(found[0].run)))
        return 0
    repeats = rounds(parser, args.repeats, args.quick)
    sizes = QUICK_SIZES if args.quick else SIZES
    output, min_seconds, load_before = begin(args.output, RESULTS, args.quick, repeats)
    peak = Peak(min_seconds)
    rows = []
    for size in sizes:
        print(f"  {size} ...", file=sys.stderr)
        group = contenders(*size)
        run_rounds(group, repeats, min_seconds, peak)
        baseline = group[0]
        for contender in group:
            forward = Summary.of(contender.seconds[False], baseline.seconds[False], 1.0)
            backward = Summary.of(contender.seconds[True], baseline.seconds[True], 1.0)
            rows.append((size, contender, forward, backward))
    memory = {}
    if not (args.quick or args.no_memory):
        for contender in contenders(*MEMORY_SIZE):
            print(f"  peak RSS of {contender.key} ...", file=sys.stderr)
            figures = peak_rss("minimal", contender.key, torch.get_num_threads())
            if figures is not None:
                memory[contender.key] = figures

    def ms(summary: Summary) -> str:  # Summary.of with units = 1 gives calls/s; show ms per call
        return f"{1e3 / summary.median:.1f} ({1e3 / summary.high:.1f}-{1e3 / summary.low:.1f})"

    command = " ".join(["python -m benchmarks.minimal", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# minGRU / minLSTM vs GRU / LSTM",
        "",
        f"`{command}`: torch {torch.__version__}, {machine()}, "
        f"{torch.get_num_threads()} thread(s), float32. {repeats} rounds, contenders interleaved. Load average "
        f"(1, 5, 15 min) before: {load_before}; after: {load_average()}.",
        "",
        "Milliseconds per call, median (min-max) over rounds; `x nn.GRU` is the paired ratio torch.nn.GRU time / "
        f"this row's time. Peak RSS: one forward+backward at (B, T, H) = {MEMORY_SIZE} in a fresh process "
        "(in brackets: the increase over the RSS before the call).",
        "",
        "| B, T, H=D | implementation | fwd ms | fwd x nn.GRU | fwd+bwd ms | fwd+bwd x nn.GRU | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for size, contender, forward, backward in rows:
        figures = memory.get(contender.key)
        rss = "" if figures is None else (f"{figures['peak_mib']:,.0f} "
                                          f"(+{figures['peak_mib'] - figures['before_mib']:,.0f})")
        lines.append(f"| {', '.join(map(str, size))} | {contender.label} | {ms(forward)} | {forward.ratio:.2f} | "
                     f"{ms(backward)} | {backward.ratio:.2f} | {rss} |")
    text = "\n".join(lines) + "\n"
    write_results(text, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
