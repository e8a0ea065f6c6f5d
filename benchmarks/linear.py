"""The products of a recurrent layer, torch.mm (MKL) against oneDNN (``rnnkit.fast.products``), in GFLOP/s.

For H = 256 and 512 with 4H gates (an LSTM), the three products of the hoisted input projection over
T*B = 6400 rows (forward x W^T, dL/dx = g W, dL/dW = g^T x) and the per-step products of the fast path's loop
(h W_hh^T with B rows, and its backward d W_hh), at B = 1, 8, 64 and 128. Each pair is timed interleaved round
by round (benchmarks/harness.py); ``x mm`` is the paired ratio of torch.mm's time to oneDNN's. The row
``chosen`` says which one ``rnnkit.fast.products`` uses at that size (oneDNN from ``MIN_MACS`` multiply-adds, and
never for dL/dW, where MKL was the faster one).

Usage: ``python -m benchmarks.linear [--quick] [--repeats N] [--threads N] [--output PATH]`` or
``rnnkit bench linear``. Writes benchmarks/results/linear.md (``--quick``: linear.quick.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.harness import (
    Contender,
    Peak,
    Summary,
    begin,
    load_average,
    machine,
    rounds,
    run_rounds,
    set_threads,
    write_results,
)
from rnnkit.fast import dispatch, products

RESULTS = Path(__file__).resolve().parent / "results" / "linear.md"
HIDDEN = (256, 512)
ROWS = 6400  # T * B = 100 * 64
STEP_ROWS = (1, 8, 64, 128)
QUICK = dict(hidden=(16,), rows=64, step_rows=(4,))


def cases(hidden: tuple[int, ...], rows: int, step_rows: tuple[int, ...]):
    """(H, product, rows, multiply-adds, a, weight, chosen): ``a @ weight.T`` for every product measured."""
    generator = torch.Generator().manual_seed(0)
    for size in hidden:
        gates = 4 * size
        weight = torch.randn(gates, size, generator=generator)  # (4H, H)
        x = torch.randn(rows, size, generator=generator)
        g = torch.randn(rows, gates, generator=generator)
        macs = rows * size * gates
        yield size, "input projection x W^T", rows, macs, x, weight, dispatch.products_onednn(x, weight)
        yield size, "its dL/dx = g W", rows, macs, g, weight.t(), dispatch.products_onednn(g, weight.t())
        yield size, "its dL/dW = g^T x", rows, macs, g.t(), x.t(), False
        for batch in step_rows:
            h, d = torch.randn(batch, size, generator=generator), torch.randn(batch, gates, generator=generator)
            chosen = dispatch.products_onednn
            yield size, "step h W_hh^T", batch, batch * size * gates, h, weight, chosen(h, weight)
            yield size, "step d W_hh", batch, batch * size * gates, d, weight.t(), chosen(d, weight.t())


def _contenders(a: torch.Tensor, weight: torch.Tensor) -> list[Contender]:
    operand = weight.t()
    return [Contender("torch.mm", lambda backward: torch.mm(a, operand)),
            Contender("oneDNN", lambda backward: products.onednn(a, weight, None))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit bench linear", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=None, help=f"markdown table (default {RESULTS})")
    args = parser.parse_args(argv)
    set_threads(parser, args.threads)
    if not dispatch.ONEDNN_SUPPORTED:
        raise SystemExit("this torch has no oneDNN (torch.backends.mkldnn) build: nothing to compare")
    repeats = rounds(parser, args.repeats, args.quick)
    sizes = QUICK if args.quick else dict(hidden=HIDDEN, rows=ROWS, step_rows=STEP_ROWS)
    output, min_seconds, load_before = begin(args.output, RESULTS, args.quick, repeats)
    peak = Peak(min_seconds)
    rows = []
    for size, name, count, macs, a, weight, chosen in cases(**sizes):
        print(f"  H={size} {name}, {count} rows ...", file=sys.stderr)
        group = _contenders(a, weight)
        run_rounds(group, repeats, min_seconds, peak, modes=(False,))
        mm, onednn = (Summary.of(c.seconds[False], group[0].seconds[False], 2.0 * macs) for c in group)
        rows.append((size, name, count, mm, onednn, chosen))
    command = " ".join(["python -m benchmarks.linear", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Products: torch.mm (MKL) against oneDNN",
        "",
        f"`{command}`: torch {torch.__version__}, {machine()}, "
        f"{torch.get_num_threads()} thread(s), float32. {repeats} rounds, contenders interleaved. Load average "
        f"(1, 5, 15 min) before: {load_before}; after: {load_average()}. sgemm peak (2048^3, best of the rounds): "
        f"{peak.best / 1e9:.0f} GFLOP/s (median {peak.median / 1e9:.0f}).",
        "",
        "GFLOP/s, median (min-max) over rounds; `x mm` is the paired ratio torch.mm time / oneDNN time.",
        "",
        "| H | product | rows | torch.mm GFLOP/s | oneDNN GFLOP/s | x mm | rnnkit uses |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for size, name, count, mm, onednn, chosen in rows:
        def gflops(s: Summary) -> str:
            return f"{s.median / 1e9:.0f} ({s.low / 1e9:.0f}-{s.high / 1e9:.0f})"

        lines.append(f"| {size} | {name} | {count} | {gflops(mm)} | {gflops(onednn)} | {onednn.ratio:.2f} | "
                     f"{'oneDNN' if chosen else 'torch.mm'} |")
    write_results("\n".join(lines) + "\n", output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
