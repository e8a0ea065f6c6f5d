"""rnnkit's layers against an earlier commit's, side by side in one process: a paired A/B of every rnnkit row of
benchmarks/layers.py.

The earlier commit's ``rnnkit/`` is taken with ``git archive`` into a scratch directory and imported as the package
``rnnkit_before`` (its imports renamed; its native kernels build into their own cache files), so both versions run
in the same process on the same inputs and weights, their contenders interleaved round by round in a rotated order
(benchmarks/harness.py's timing rules). ``after / before`` is the median over rounds of the earlier version's time
over this version's, taken in the same round: above 1, this version is faster.

Usage: ``python -m benchmarks.layers_ab --before COMMIT [--repeats N] [--threads N] [--sizes B,T,H ...]
[--output PATH]``.
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
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import rnnkit
from benchmarks.harness import ROOT, Contender, Peak, load_average, machine, run_rounds, set_threads
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.layers_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with (e.g. main)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--min-seconds", type=float, default=0.3, help="of calls per timing")
    parser.add_argument("--sizes", nargs="+", default=None, metavar="B,T,H")
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
        f"{args.repeats} rounds, the two versions interleaved. Load average (1, 5, 15 min) before: "
        f"{load_before_run}; after: LOAD_AFTER.",
        "",
        "`after / before`: median over rounds of the earlier version's time / this version's, paired per round "
        "(above 1: faster now).",
        "",
        "| B, T, H=D | implementation | fwd after / before | fwd+bwd after / before |",
        "|---|---|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        before = load_before(args.before, Path(scratch))
        peak = Peak(0.2)
        for size in sizes:
            old_groups, new_groups = groups(*size, package=before), groups(*size, package=rnnkit)
            for old_group, new_group in zip(old_groups, new_groups, strict=True):
                for old, new in zip(old_group.contenders, new_group.contenders, strict=True):
                    if not old.label.startswith("rnnkit"):
                        continue  # torch.nn's rows are the same code in both
                    pair = [Contender(f"{old.label} before", old.run), Contender(f"{new.label} after", new.run)]
                    print(f"  {size} {new.label} ...", file=sys.stderr, flush=True)
                    run_rounds(pair, args.repeats, args.min_seconds, peak)
                    ratios = [statistics.median(b / a for b, a in zip(pair[0].seconds[mode], pair[1].seconds[mode],
                                                                        strict=True)) for mode in (False, True)]
                    line = (f"| {', '.join(map(str, size))} | {new.label} ({new_group.name}) | {ratios[0]:.3f} | "
                            f"{ratios[1]:.3f} |")
                    print(line, flush=True)
                    lines.append(line)
    text = "\n".join(lines).replace("LOAD_AFTER", load_average()) + "\n"
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
