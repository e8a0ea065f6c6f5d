"""A variant of rnnkit's native kernels against the built ones, side by side in one process.

The variant is ``rnnkit/fast/csrc`` with one text replacement in ``kernels.c`` (``--replace OLD NEW``), compiled
with this machine's build settings (``python -m rnnkit.fast``) and registered as ``torch.ops.rnnkit_variant`` (the
namespace is a compile-time define of csrc/ops.cpp), so both sets of kernels live in the process and the
contenders of each group are interleaved round by round (benchmarks/harness.py's timing rules):

* the step kernels alone, one call at (B, H) = (64, 256) (the torch operator's ~3 us dispatch included), on
  pre-activations drawn at scale 1 (trained networks) and 255 (raw pixel values);
* the layers forward+backward and forward at ``--sizes``: the GRU, the LSTM with lengths, the layer-norm LSTM and
  the reset-before GRU (the four whose step loops run in C), on inputs at scale 1.

Ratios are variant time / built time, paired per round (above 1: the variant is slower). Usage, e.g. the old
overflowing sigmoid against the current one (issue 17)::

    python -m benchmarks.kernel_variants --replace "return 0.5f * tanhf(0.5f * x) + 0.5f;" \\
        "return 1.0f / (1.0f + expf(-x));" --output benchmarks/results/sigmoid.md
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import rnnkit
from benchmarks.harness import Contender, Peak, load_average, machine, run_rounds
from rnnkit.fast import native

SIZES = [(64, 100, 256), (1, 100, 256), (32, 500, 128)]
NAMESPACE = "rnnkit_variant"


def build_variant(old: str, new: str, scratch: Path) -> ctypes.CDLL:
    """csrc/ with ``old`` replaced by ``new`` in kernels.c, built as this process built csrc/, operators in
    torch.ops.rnnkit_variant."""
    build = native.load()
    if build.status != "loaded":
        raise SystemExit(f"the native kernels are not available: {build.reason}")
    kernels = (native.CSRC / "kernels.c").read_text()
    if old not in kernels:
        raise SystemExit(f"{old!r} is not in csrc/kernels.c")
    (scratch / "kernels.c").write_text(kernels.replace(old, new))
    (scratch / "kernels.h").write_text((native.CSRC / "kernels.h").read_text())
    torch_compile, torch_link = native.torch_flags()
    steps = [
        [*build.compiler, *build.c_flags, "-I", str(scratch), "-c", str(scratch / "kernels.c"), "-o",
         str(scratch / "kernels.o")],
        [*build.cxx, *native.CXX_FLAGS, *torch_compile, f'-DRNNKIT_OPERATOR_NAMESPACE="{NAMESPACE}"', "-I",
         str(native.CSRC), "-c", str(native.CSRC / "ops.cpp"), "-o", str(scratch / "ops.o")],
        [*build.cxx, "-shared", str(scratch / "kernels.o"), str(scratch / "ops.o"), "-o", str(scratch / "variant.so"),
         *build.link_flags, *torch_link, "-lm"],
    ]
    for command in steps:
        subprocess.run(command, check=True)
    library = ctypes.CDLL(str(scratch / "variant.so"))
    library.rnnkit_register_operators.restype = ctypes.c_char_p
    error = library.rnnkit_register_operators()
    if error:
        raise SystemExit(error.decode())
    return library


def _with(namespace: str, run):
    """``run`` with the fast path calling the operators of ``namespace``."""
    operators = getattr(torch.ops, namespace)

    def call(backward: bool) -> None:
        saved = native.operators
        native.operators = lambda: operators
        try:
            run(backward)
        finally:
            native.operators = saved

    return call


def _pair(label: str, run) -> list[Contender]:
    return [Contender(f"{label} (built)", _with("rnnkit", run)), Contender(f"{label} (variant)", _with(NAMESPACE, run))]


def _kernel_group(scale: float) -> list[tuple[str, list[Contender]]]:
    """The three step kernels at (B, H) = (64, 256) on pre-activations drawn at ``scale``."""
    batch, hidden = 64, 256
    generator = torch.Generator().manual_seed(0)
    a = scale * torch.randn(batch, 4 * hidden, generator=generator)
    xp, rec = scale * torch.randn(batch, 3 * hidden, generator=generator), torch.randn(batch, 3 * hidden)
    c, h, h_prev = torch.randn(batch, hidden), torch.empty(batch, hidden), torch.randn(batch, hidden)
    lstm_factors, gru_factors = torch.empty(batch, 6 * hidden), torch.empty(batch, 5 * hidden)
    rz, reset = torch.empty(batch, 2 * hidden), torch.empty(batch, hidden)

    def lstm(backward: bool) -> None:
        native.operators().lstm_step(a, c.clone(), h, lstm_factors)

    def gru(backward: bool) -> None:
        native.operators().gru_step(rec, xp, h_prev, h, gru_factors)

    def reset_gates(backward: bool) -> None:
        rz.copy_(xp[:, : 2 * hidden])
        native.operators().reset_before_gates(rz, h_prev, reset)

    return [(f"{name}, (64, 256), scale {scale:g}", _pair(name, run))
            for name, run in (("lstm_step", lstm), ("gru_step", gru), ("reset_before_gates", reset_gates))]


def kernel_groups() -> list[tuple[str, list[Contender]]]:
    return _kernel_group(1.0) + _kernel_group(255.0)


def layer_groups(sizes) -> list[tuple[str, list[Contender]]]:
    groups = []
    for batch, steps, hidden in sizes:
        for name, build, options, lengths in (
            ("GRU", rnnkit.GRU, {}, False),
            ("LSTM lengths=", rnnkit.LSTM, {}, True),
            ("LSTM(layer_norm=True)", rnnkit.LSTM, {"layer_norm": True}, False),
            ("GRU(reset_after=False)", rnnkit.GRU, {"reset_after": False}, False),
        ):
            torch.manual_seed(0)
            layer = build(hidden, hidden, batch_first=True, **options)
            x = torch.randn(batch, steps, hidden, requires_grad=True)
            given = torch.randint(steps // 4, steps + 1, (batch,))
            given[0] = steps
            length_argument = given if lengths else None

            def run(backward: bool, layer=layer, x=x, length_argument=length_argument) -> None:
                if backward:
                    output, _ = layer(x, lengths=length_argument)
                    output.sum().backward()
                else:
                    with torch.no_grad():
                        layer(x, lengths=length_argument)

            groups.append((f"{name}, ({batch}, {steps}, {hidden})", _pair(name, run)))
    return groups


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replace", nargs=2, metavar=("OLD", "NEW"), required=True)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="*", default=None, help="B,T,H ...")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = SIZES if args.sizes is None else [tuple(int(v) for v in s.split(",")) for s in args.sizes]
    lines = [f"Variant: `{args.replace[0]}` -> `{args.replace[1]}` in csrc/kernels.c", "",
             f"{machine()}, {args.threads} threads, load average {load_average()} before the run; "
             f"`python -m benchmarks.kernel_variants` ({args.repeats} rounds).", "",
             "| what | built: median | variant: median | variant / built (paired median) |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as scratch:
        build_variant(*args.replace, Path(scratch))
        peak = Peak(0.2)
        for title, contenders in kernel_groups() + layer_groups(sizes):
            modes = (False,) if "_step" in title or "gates" in title else (False, True)
            run_rounds(contenders, args.repeats, 0.3, peak, modes)
            for backward in modes:
                built, variant = (c.seconds[backward] for c in contenders)
                ratio = statistics.median(v / b for v, b in zip(variant, built, strict=True))
                what = title + ("" if modes == (False,) else (", fwd+bwd" if backward else ", fwd"))
                line = (f"| {what} | {statistics.median(built) * 1e6:,.1f} us | "
                        f"{statistics.median(variant) * 1e6:,.1f} us | {ratio:.3f} |")
                lines.append(line)
                print(line, flush=True)
    lines += ["", f"Load average after the run: {load_average()}."]
    if args.output is not None:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
