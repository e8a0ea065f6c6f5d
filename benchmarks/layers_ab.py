"""rnnkit's layers against an earlier commit's, side by side in one process: a paired A/B of every rnnkit row of
benchmarks/layers.py.

The earlier commit's ``rnnkit/`` is taken with ``git archive`` into a scratch directory and imported as the package
``rnnkit_before`` (its imports renamed; its native kernels build into their own cache files), so both versions run
in the same process on the same inputs and weights, alternating call by call (before, after, after, before, ...)
for ``--seconds`` per row and mode. ``after / before`` is the median over those pairs of the earlier version's time
over this version's: above 1, this version is faster; the quartiles of the pairs' ratios say how far one pair
can be trusted.

Why call by call: the machine's speed drifts over seconds (other tenants, clock), and benchmarks/harness.py's
rounds time each contender for a fraction of a second in turn, so a paired round still sees two different
machines; on one row the two methods disagreed by more than the differences this benchmark is for
(benchmarks/results/layers_ab.md, "Why the method changed").

Usage: ``python -m benchmarks.layers_ab --before COMMIT [--seconds S] [--threads N] [--sizes B,T,H ...]
[--only LABEL ...] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import rnnkit
from benchmarks.harness import ROOT, load_average, machine, set_threads
from benchmarks.layers import SIZES, groups


def load_before(commit: str, scratch: Path):
    """``rnnkit/`` at ``commit`` as the importable package ``rnnkit_before``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "rnnkit"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(scratch, filter="data")
    package = scratch / "rnnkit_before"
    (scratch / "rnnkit").rename(package)
    for path in package.rglob("*.py"):
        text = re.sub(r"\brnnkit\.", "rnnkit_before.", path.read_text(encoding="utf-8"))
        text = re.sub(r"\bfrom rnnkit import\b", "from rnnkit_before import", text)
        text = re.sub(r"^import rnnkit$", "import rnnkit_before", text, flags=re.M)
        path.write_text(text, encoding="utf-8")
    sys.path.insert(0, str(scratch))
    return importlib.import_module("rnnkit_before")


def alternate(before, after, backward: bool, seconds: float) -> list[float]:
    """Before's time / after's for each pair of calls, alternating for ``seconds`` in the order before, after,
    after, before, ... (so that neither always runs first), after two warm-up calls of each."""
    for _ in range(2):
        before(backward)
        after(backward)
    ratios = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(ratios) < 5:
        times = {}
        for name, run in ((("before", before), ("after", after)) if len(ratios) % 2 == 0 else
                          (("after", after), ("before", before))):
            start = time.perf_counter()
            run(backward)
            times[name] = time.perf_counter() - start
        ratios.append(times["before"] / times["after"])
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.layers_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with (e.g. main)")
    parser.add_argument("--seconds", type=float, default=6.0, help="of alternating calls per row and mode")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sizes", nargs="+", default=None, metavar="B,T,H")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="only the rows whose implementation is one of these (e.g. 'rnnkit.RNN fast path')")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    set_threads(parser, args.threads)
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
    load_before_run = load_average()
    command = " ".join(["python -m benchmarks.layers_ab", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        f"# rnnkit layers: this version against {args.before}",
        "",
        f"`{command}`: torch {torch.__version__}, {machine()}, {torch.get_num_threads()} thread(s), float32. "
        f"Calls alternate between the two versions for {args.seconds:g} s per row and mode. Load average (1, 5, "
        f"15 min) before: {load_before_run}; after: LOAD_AFTER.",
        "",
        "`after / before`: median over call pairs of the earlier version's time / this version's (above 1: faster "
        "now); in brackets the quartiles of the pairs' ratios; `pairs`: how many pairs (fwd, fwd+bwd).",
        "",
        "| B, T, H=D | implementation | fwd after / before | fwd+bwd after / before | pairs |",
        "|---|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        before = load_before(args.before, Path(scratch))
        for size in sizes:
            old_groups, new_groups = groups(*size, package=before), groups(*size, package=rnnkit)
            for old_group, new_group in zip(old_groups, new_groups, strict=True):
                for old, new in zip(old_group.contenders, new_group.contenders, strict=True):
                    if not old.label.startswith("rnnkit"):
                        continue  # torch.nn's rows are the same code in both
                    if args.only is not None and new.label not in args.only:
                        continue
                    print(f"  {size} {new.label} ...", file=sys.stderr, flush=True)
                    cells, counts = [], []
                    for backward in (False, True):
                        ratios = alternate(old.run, new.run, backward, args.seconds)
                        low, middle, high = statistics.quantiles(ratios, n=4)
                        cells.append(f"{middle:.3f} [{low:.2f}, {high:.2f}]")
                        counts.append(str(len(ratios)))
                    line = (f"| {', '.join(map(str, size))} | {new.label} ({new_group.name}) | {cells[0]} | "
                            f"{cells[1]} | {', '.join(counts)} |")
                    print(line, flush=True)
                    lines.append(line)
    text = "\n".join(lines).replace("LOAD_AFTER", load_average()) + "\n"
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
