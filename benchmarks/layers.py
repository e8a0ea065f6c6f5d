"""Speed of rnnkit's recurrent layers against torch.nn and a per-step cell loop.

Measures forward (under no_grad) and forward+backward (gradients of every parameter and of the input)
throughput in tokens per second, medians of several repeats. Within a group the contenders run round-robin
(interleaved), so that changes in machine load hit them alike. Each row also shows its fraction of the sgemm
peak, timed with a big matrix product in the same rounds: a layer's forward costs about
2 * tokens * G * H * (D + H) FLOPs (G gates), forward+backward about 3 times that.

Groups per size (B, T, H = D):

* LSTM, GRU, RNN: torch.nn vs rnnkit (fused kernel) vs rnnkit's own path (forced), and for the LSTM a
  per-step ``nn.LSTMCell`` loop;
* layer-norm LSTM and reset-before GRU (rnnkit's own path; torch.nn has no such layer), next to torch.nn's
  standard layer of the same size;
* variable lengths (uniform in [T/4, T]): torch.nn on a PackedSequence (pack, run, unpack) vs rnnkit's
  ``lengths=`` (fused: packs internally; own path: masks). Tokens are the real tokens.

Usage: ``python -m benchmarks.layers [--quick] [--repeats N] [--threads N] [--output PATH]``, or
``rnnkit bench layers``. Writes a markdown table to benchmarks/results/layers.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit

SIZES = [(64, 100, 256), (64, 100, 512), (1, 100, 256), (32, 500, 128)]  # (B, T, H = D)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
RESULTS = Path(__file__).resolve().parent / "results" / "layers.md"


@dataclass
class Contender:
    """One implementation in a group: ``run(backward)`` does one forward (and backward) pass."""

    label: str
    run: Callable[[bool], None]
    forward_times: list[float] = field(default_factory=list)  # seconds per call, one entry per repeat
    backward_times: list[float] = field(default_factory=list)
    calls: dict[bool, int] = field(default_factory=lambda: {False: 1, True: 1})  # calls per measurement

    def calibrate(self, min_seconds: float) -> None:
        """Warm up, and choose how many calls make one measurement last at least ``min_seconds``."""
        for backward in (False, True):
            seconds = _time(lambda b=backward: self.run(b))  # warm-up: allocator, oneDNN primitives
            seconds = _time(lambda b=backward: self.run(b))
            self.calls[backward] = max(1, math.ceil(min_seconds / max(seconds, 1e-9)))

    def measure(self) -> None:
        for backward, times in ((False, self.forward_times), (True, self.backward_times)):
            calls = self.calls[backward]
            times.append(_time(lambda b=backward, n=calls: [self.run(b) for _ in range(n)]) / calls)


@dataclass
class Row:
    size: tuple[int, int, int]
    group: str
    label: str
    forward: float  # tokens / s
    backward: float  # tokens / s (forward + backward)
    forward_ratio: float  # vs the group's torch.nn baseline
    backward_ratio: float
    forward_peak: float  # fraction of the measured sgemm FLOP/s
    backward_peak: float


def _layer_run(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None, packed: bool):
    """A closure running ``module`` on x (T, B, D), with variable lengths the torch way or the rnnkit way."""
    parameters = [p for p in module.parameters()]

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

    return run


def _groups(batch: int, steps: int, hidden: int) -> list[tuple[str, str, list[Contender], int]]:
    """(group name, cell type for FLOPs, contenders (baseline first), tokens) for one size."""
    torch.manual_seed(0)
    x = torch.randn(steps, batch, hidden, requires_grad=True)  # (T, B, D)
    tokens = batch * steps
    groups = []
    for name, theirs, ours in (("LSTM", nn.LSTM, rnnkit.LSTM), ("GRU", nn.GRU, rnnkit.GRU),
                               ("RNN", nn.RNN, rnnkit.RNN)):
        reference = theirs(hidden, hidden)
        fused = ours(hidden, hidden)
        fused.load_state_dict(reference.state_dict())
        own = ours(hidden, hidden, use_fused=False)
        own.load_state_dict(reference.state_dict())
        contenders = [
            Contender(f"torch.nn.{name}", _layer_run(reference, x, None, False)),
            Contender(f"rnnkit.{name} (fused)", _layer_run(fused, x, None, False)),
            Contender(f"rnnkit.{name} (own path)", _layer_run(own, x, None, False)),
        ]
        if name == "LSTM":
            cell = nn.LSTMCell(hidden, hidden)
            contenders.append(Contender("nn.LSTMCell loop", _cell_loop_run(cell, x)))
        groups.append((name, name, contenders, tokens))
    groups.append(("layer-norm LSTM", "LSTM", [
        Contender("torch.nn.LSTM (standard)", _layer_run(nn.LSTM(hidden, hidden), x, None, False)),
        Contender("rnnkit.LSTM(layer_norm=True)", _layer_run(rnnkit.LSTM(hidden, hidden, layer_norm=True), x,
                                                             None, False)),
    ], tokens))
    groups.append(("reset-before GRU", "GRU", [
        Contender("torch.nn.GRU (reset after)", _layer_run(nn.GRU(hidden, hidden), x, None, False)),
        Contender("rnnkit.GRU(reset_after=False)", _layer_run(rnnkit.GRU(hidden, hidden, reset_after=False), x,
                                                              None, False)),
    ], tokens))
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(max(1, steps // 4), steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    reference = nn.LSTM(hidden, hidden)
    fused = rnnkit.LSTM(hidden, hidden)
    fused.load_state_dict(reference.state_dict())
    own = rnnkit.LSTM(hidden, hidden, use_fused=False)
    own.load_state_dict(reference.state_dict())
    groups.append(("LSTM, variable lengths", "LSTM", [
        Contender("torch.nn.LSTM + PackedSequence", _layer_run(reference, x, lengths, True)),
        Contender("rnnkit.LSTM lengths= (fused)", _layer_run(fused, x, lengths, False)),
        Contender("rnnkit.LSTM lengths= (own path)", _layer_run(own, x, lengths, False)),
    ], int(lengths.sum())))
    return groups


def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sgemm_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    return _time(lambda: torch.mm(a, b))


def measure(repeats: int, sizes=SIZES, min_seconds: float = 0.2, log=print) -> tuple[list[Row], float]:
    """Run every group ``repeats`` times round-robin; return the rows and the median sgemm FLOP/s.

    One measurement repeats a call until it lasts ``min_seconds`` (short calls are noisy on a shared machine).
    """
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    sgemm = []
    rows: list[Row] = []
    for size in sizes:
        batch, steps, hidden = size
        for group, cell, contenders, tokens in _groups(*size):
            log(f"  {size} {group} ...")
            for contender in contenders:
                contender.calibrate(min_seconds)
            for repeat in range(repeats):
                sgemm.append(2 * n**3 / _sgemm_seconds(a, b))
                start = repeat % len(contenders)  # rotate the order so no one always runs first
                for contender in contenders[start:] + contenders[:start]:
                    contender.measure()
            peak = statistics.median(sgemm)
            flops = 2 * tokens * GATES[cell] * hidden * (hidden + hidden)  # 2 * tokens * G * H * (D + H)
            baseline = contenders[0]
            base_forward = statistics.median(baseline.forward_times)
            base_backward = statistics.median(baseline.backward_times)
            for contender in contenders:
                forward = statistics.median(contender.forward_times)
                backward = statistics.median(contender.backward_times)
                rows.append(Row(size, group, contender.label, tokens / forward, tokens / backward,
                                base_forward / forward, base_backward / backward,
                                flops / forward / peak, 3 * flops / backward / peak))
    return rows, statistics.median(sgemm)


def table(rows: list[Row], peak: float, repeats: int, threads: int, load: str, min_seconds: float) -> str:
    lines = [
        "# rnnkit layers vs torch.nn",
        "",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {threads} thread(s), "
        f"median of {repeats} repeats (each repeat times >= {min_seconds} s of calls), contenders interleaved in "
        f"rotating order. sgemm peak (1024^3, same run): {peak / 1e9:.1f} GFLOP/s. "
        f"Load average (1, 5, 15 min) before the run: {load}.",
        "",
        "Throughput in tokens/s; `x torch` is the ratio to the group's first row (torch.nn); `% peak` uses "
        "2*tokens*G*H*(D+H) FLOPs forward, 3x that forward+backward.",
        "",
        "| B, T, H=D | group | implementation | fwd tok/s | fwd x torch | fwd % peak | fwd+bwd tok/s "
        "| fwd+bwd x torch | fwd+bwd % peak |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size[0]}, {r.size[1]}, {r.size[2]} | {r.group} | {r.label} | {r.forward:,.0f} | "
            f"{r.forward_ratio:.2f} | {100 * r.forward_peak:.0f}% | {r.backward:,.0f} | {r.backward_ratio:.2f} | "
            f"{100 * r.backward_peak:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def _load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:  # not available on this platform
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit bench layers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats of >= 0.05 s instead of 5 of >= 0.2 s")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown table (default {RESULTS})")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    min_seconds = 0.05 if args.quick else 0.2
    load = _load_average()
    print(f"benchmarking with {torch.get_num_threads()} thread(s), {repeats} repeats; load average {load}",
          file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, peak = measure(repeats, min_seconds=min_seconds, log=lambda message: print(message, file=sys.stderr))
    text = table(rows, peak, repeats, torch.get_num_threads(), load, min_seconds)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
