"""Matrix products of subnormal values, with and without flushing them to zero (rnnkit/denormals.py).

A confident model's softmax gives probabilities below float32's smallest normal number (1.2e-38) to most
classes or source positions; they reach matrix products in attention (weights x encoder states) and in the
cross-entropy's gradient (dL/dlogits x output weights). Each contender is one such product at a G2P model's
sizes, on softmax outputs of logits drawn at a scale that makes some of the probabilities subnormal (the table
gives the share), against the same product on probabilities of ordinary size. Each mode runs in its own process
(the flush mode of torch's worker threads is fixed when they start); the two inputs are timed in alternating
rounds (benchmarks/harness.py's rules).

Usage: ``python -m benchmarks.denormals [--repeats N] [--threads N] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.harness import (
    Contender,
    Peak,
    child_json,
    load_average,
    machine,
    run_rounds,
    set_threads,
    write_results,
)

SUBNORMAL = torch.finfo(torch.float32).tiny


def contenders() -> list[tuple[str, Contender, float]]:
    """(what, contender, share of subnormal probabilities) per product and input scale."""
    torch.manual_seed(0)
    result = []
    rows, classes, hidden = 128 * 12, 64, 512  # B x T target positions; phonemes or source positions; H
    weights = torch.randn(classes, hidden)
    for scale, name in ((3.0, "ordinary"), (60.0, "confident")):
        probabilities = torch.softmax(scale * torch.randn(rows, classes), dim=-1)
        share = float(((probabilities > 0) & (probabilities < SUBNORMAL)).float().mean())
        result.append((f"probabilities ({name} softmax) x weights", Contender(
            name, lambda backward, p=probabilities: torch.mm(p, weights)), share))
    return result


def child(flush: bool, repeats: int) -> dict:
    if flush:
        torch.set_flush_denormal(True)  # before anything computes: the worker threads inherit it
    pairs = contenders()
    group = [contender for _, contender, _ in pairs]
    run_rounds(group, repeats, 0.2, Peak(0.0), modes=(False,))
    return {c.label: {"seconds": statistics.median(c.seconds[False]), "subnormal_share": share}
            for _, c, share in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.denormals", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", choices=("flush", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    set_threads(parser, args.threads)
    if args.child:
        print(json.dumps(child(args.child == "flush", args.repeats)))
        return 0
    before = load_average()
    results = {}
    for mode in ("plain", "flush"):
        command = [sys.executable, "-m", "benchmarks.denormals", "--child", mode, "--repeats", str(args.repeats),
                   "--threads", str(torch.get_num_threads())]
        results[mode] = child_json(command)
    lines = [
        "# Subnormal floats in matrix products",
        "",
        f"`python -m benchmarks.denormals --repeats {args.repeats}`: torch {torch.__version__}, {machine()}, "
        f"{torch.get_num_threads()} thread(s). Load average (1, 5, 15 min) before: {before}; after: "
        f"{load_average()}. A (1536, 64) x (64, 512) product (B x T = 128 x 12 positions, 64 classes, H = 512) "
        "of softmax probabilities; median over rounds.",
        "",
        "| probabilities | subnormal share | ms, plain process | ms, subnormals flushed | plain / flushed |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, plain in results["plain"].items():
        flushed = results["flush"][label]
        lines.append(f"| {label} | {plain['subnormal_share']:.0%} | {1e3 * plain['seconds']:.3f} | "
                     f"{1e3 * flushed['seconds']:.3f} | {plain['seconds'] / flushed['seconds']:.2f} |")
    write_results("\n".join(lines) + "\n", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
