"""What the speed benchmarks share: interleaved timing, the sgemm peak, peak RSS in a subprocess, load.

Timing (:func:`run_rounds`): every contender of a group is warmed up, then the group runs ``repeats`` rounds;
in each round every contender is timed once (forward, then forward+backward), in an order rotated from round
to round, so that a change in machine load hits them alike. One timing repeats a call until it lasts at least
``min_seconds`` (short calls are noisy on a shared machine) and divides. Each row reports the median over
rounds and the range (min-max); ratios are paired: the median over rounds of baseline time / contender time,
both taken in the same round.

The sgemm peak (:class:`Peak`) is timed with the same thread count, in the same rounds (2048^3 and 1024^3
products, each timing >= ``min_seconds``); the *best* over all rounds is the peak (load only ever slows a
product down), the median is reported beside it to show the load during the run.

Peak RSS (:func:`peak_rss`): a fresh Python process builds the benchmark's inputs and modules, runs one
contender's forward+backward twice, and reports the high-water mark of its resident set (VmHWM on Linux, see
:func:`peak_rss_bytes`) and its RSS before the first call; tracemalloc would miss torch's allocations, which
are not Python objects.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Contender:
    """One implementation in a group: ``run(backward)`` does one forward (and, if asked, backward) pass."""

    label: str
    run: Callable[[bool], None]
    key: str = ""  # names the contender for the memory probe; "" = not probed
    seconds: dict[bool, list[float]] = field(default_factory=lambda: {False: [], True: []})  # per round
    calls: dict[bool, int] = field(default_factory=lambda: {False: 1, True: 1})

    def calibrate(self, min_seconds: float, modes: tuple[bool, ...]) -> None:
        """Warm up (allocator, oneDNN primitives), then choose the calls per timing for >= ``min_seconds``."""
        for backward in modes:
            _time(lambda b=backward: self.run(b))
            seconds = _time(lambda b=backward: self.run(b))
            self.calls[backward] = max(1, math.ceil(min_seconds / max(seconds, 1e-9)))

    def measure(self, backward: bool) -> None:
        calls = self.calls[backward]
        self.seconds[backward].append(_time(lambda: [self.run(backward) for _ in range(calls)]) / calls)


@dataclass
class Peak:
    """The machine's sgemm FLOP/s at the benchmark's thread count, timed between the contenders' rounds."""

    min_seconds: float
    samples: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._operands = [(torch.randn(n, n), torch.randn(n, n)) for n in (1024, 2048)]
        for a, b in self._operands:
            torch.mm(a, b)  # warm-up

    def measure(self) -> None:
        for a, b in self._operands:
            n = a.shape[0]
            single = _time(lambda a=a, b=b: torch.mm(a, b))
            calls = max(1, math.ceil(self.min_seconds / max(single, 1e-9)))
            seconds = _time(lambda a=a, b=b, calls=calls: [torch.mm(a, b) for _ in range(calls)]) / calls
            self.samples.append(2 * n**3 / seconds)

    @property
    def best(self) -> float:
        return max(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def run_rounds(contenders: list[Contender], repeats: int, min_seconds: float, peak: Peak,
               modes: tuple[bool, ...] = (False, True)) -> None:
    """Calibrate, then ``repeats`` rounds, each timing every contender once per mode in a rotated order."""
    for contender in contenders:
        contender.calibrate(min_seconds, modes)
    for repeat in range(repeats):
        peak.measure()
        start = repeat % len(contenders)  # rotate the order so that no one always runs first
        for contender in contenders[start:] + contenders[:start]:
            for backward in modes:
                contender.measure(backward)


@dataclass
class Summary:
    """Throughput of one contender in one mode: median and range over rounds, paired ratio to the baseline."""

    median: float  # units per second
    low: float
    high: float
    ratio: float  # median over rounds of baseline seconds / contender seconds

    @classmethod
    def of(cls, seconds: list[float], baseline: list[float], units: float) -> Summary:
        ratios = [b / s for b, s in zip(baseline, seconds, strict=True)]
        rates = [units / s for s in seconds]
        return cls(units / statistics.median(seconds), min(rates), max(rates), statistics.median(ratios))


def rate(value: float) -> str:
    """Throughput for a table: 46,700 / 4,670 / 467.0 / 4.67."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def machine() -> str:
    """The CPU for a results header: its model name (Linux) or architecture, and whether rnnkit.fast sends
    products to oneDNN on it (it does on AMD CPUs, where MKL takes its AVX2 path)."""
    from rnnkit.fast import dispatch

    name = dispatch.cpuinfo_field("model name") or platform.machine()
    return f"{name}, products in {'oneDNN' if dispatch.products_onednn_for(dispatch.MIN_MACS) else 'torch.mm'}"


def load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:  # not available on this platform
        return "unknown"


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- peak RSS in a fresh process ------------------------------------------------------------------------------


def rss_bytes() -> int:
    """The current resident set size (Linux /proc; else the peak so far)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The high-water mark of this process's resident set.

    On Linux, VmHWM of /proc/self/status: ``ru_maxrss`` would not do, because a child started by fork (or
    vfork) + exec inherits the parent's high-water mark (the kernel keeps the old address space's peak across
    exec), so every probe launched from a large benchmark process read that process's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def probe(run: Callable[[bool], None]) -> dict:
    """Run forward+backward twice in this (fresh) process; RSS before and the high-water mark, in MiB."""
    before = rss_bytes()
    run(True)
    run(True)
    return {"before_mib": before / 2**20, "peak_mib": peak_rss_bytes() / 2**20}


def peak_rss(module: str, key: str, threads: int, timeout: float = 600.0) -> dict | None:
    """Peak RSS of contender ``key`` of ``benchmarks.<module>``, measured in a subprocess (None if it failed)."""
    command = [sys.executable, "-m", f"benchmarks.{module}", "--memory-probe", key, "--threads", str(threads)]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as error:
        print(f"memory probe {key} failed: {error}", file=sys.stderr)
        return None


def set_threads(parser: argparse.ArgumentParser, threads: int | None) -> None:
    """Apply ``--threads`` (None: torch's choice), refusing a count below 1 with the parser's error."""
    if threads is not None:
        if threads < 1:
            parser.error(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def rounds(parser: argparse.ArgumentParser, repeats: int | None, quick: bool) -> int:
    """The number of rounds: ``--repeats``, else 2 with ``--quick`` and 5 without; below 1 is an error."""
    repeats = repeats or (2 if quick else 5)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    return repeats


def child_json(command: list[str], env: dict | None = None) -> dict:
    """Run ``command`` (a benchmark's child process) from the repository and return the JSON object on the last
    line of its output; a failing child raises CalledProcessError."""
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(text: str, output: Path | None) -> None:
    """Print a results table and write it to ``output`` (its folder created; None: print only), saying where on
    stderr."""
    print(text)
    if output is None:
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"written to {output}", file=sys.stderr)


def begin(output: Path | None, results: Path, quick: bool, repeats: int,
          seconds: float = 0.2) -> tuple[Path, float, str]:
    """A benchmark's start: its results file (``--output``, else ``results``, ``*.quick.md`` with ``--quick``),
    the seconds each timing lasts at least (0.02 with ``--quick``) and the load average before, announced on
    stderr with the thread count and rounds."""
    output = output or (results.with_suffix(".quick.md") if quick else results)
    load_before = load_average()
    print(f"benchmarking with {torch.get_num_threads()} thread(s), {repeats} rounds; load average {load_before}",
          file=sys.stderr)
    return output, 0.02 if quick else seconds, load_before
