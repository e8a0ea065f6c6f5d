"""How the native kernels are built and called: torch operators (what rnnkit uses) against cffi's API mode from
the same header (the alternative docs/fast-path.md weighs), on this machine.

* first build: a fresh process, an empty cache directory, the whole build (rnnkit: `rnnkit.fast.native.load()`;
  cffi: `FFI.compile()` of kernels.c with the same C flags, OpenMP left out);
* a load from the cache: a fresh process, the library already built;
* a call from Python: one LSTM step's kernel at n = 1, H = 8 (the work is a few nanoseconds, so the time is the
  call's own), median of 7 timings of 20,000 calls; the torch operator checks every tensor's dtype, device, shape
  and strides, the cffi call passes raw pointers from ``Tensor.data_ptr()`` and checks nothing.

cffi is not one of rnnkit's dependencies; without it (``pip install cffi``) its rows say so.

Usage: ``python -m benchmarks.native_build [--output PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.harness import child_json, load_average, machine, write_results

CALLS = 20_000


def _per_call(call) -> float:
    for _ in range(1000):
        call()
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(CALLS):
            call()
        timings.append((time.perf_counter() - started) / CALLS)
    return statistics.median(timings)


def _step_tensors():
    torch.manual_seed(0)
    return torch.randn(1, 32), torch.zeros(1, 8), torch.zeros(1, 8)  # a (4H), c, h


def child_rnnkit() -> dict:
    from rnnkit.fast import native

    started = time.perf_counter()
    build = native.load()
    seconds = time.perf_counter() - started
    if build.status != "loaded":
        return {"status": build.status, "reason": build.reason}
    a, c, h = _step_tensors()
    step = native.operators().lstm_step
    return {"status": "loaded", "load_seconds": seconds, "compile_seconds": build.seconds,
            "call_seconds": _per_call(lambda: step(a, c, h, None))}


def child_cffi(directory: str) -> dict:
    try:
        import cffi
    except ImportError:
        return {"status": "cffi is not installed"}
    from rnnkit.fast import native

    csrc = Path(native.__file__).parent / "csrc"
    sys.path.insert(0, directory)
    started = time.perf_counter()
    try:
        import _rnnkit_cffi as module  # built by an earlier process: the load from the cache
    except ImportError:
        ffi = cffi.FFI()
        header = (csrc / "kernels.h").read_text()
        body = header.split('extern "C" {', 1)[1].rsplit("#ifdef __cplusplus", 1)[0]  # the declarations only
        ffi.cdef(body.replace("#endif", ""))
        ffi.set_source("_rnnkit_cffi", '#include "kernels.h"', sources=[str(csrc / "kernels.c")],
                       include_dirs=[str(csrc)], libraries=["mvec", "m"],  # glibc's vector expf, tanhf
                       extra_compile_args=[f for f in native.C_FLAGS if f != "-std=c99"])
        ffi.compile(tmpdir=directory)
        import _rnnkit_cffi as module
    seconds = time.perf_counter() - started
    a, c, h = _step_tensors()
    ffi, lib = module.ffi, module.lib

    def call():
        lib.lstm_forward(1, 8, ffi.cast("float *", a.data_ptr()), 32, ffi.cast("float *", c.data_ptr()), 8,
                         ffi.cast("float *", h.data_ptr()), 8, ffi.NULL, 0)

    return {"status": "loaded", "load_seconds": seconds, "call_seconds": _per_call(call)}


def _child(*arguments: str, env: dict | None = None) -> dict:
    return child_json([sys.executable, "-m", "benchmarks.native_build", "--child", *arguments], env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.native_build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        print(json.dumps(child_rnnkit() if kind == "rnnkit" else child_cffi(rest[0])))
        return 0
    torch.set_num_threads(1)
    before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as cffi_dir:
        os.chmod(cache, 0o700)
        env = dict(os.environ, RNNKIT_CACHE_DIR=cache, OMP_NUM_THREADS="1")
        first, cached = _child("rnnkit", env=env), _child("rnnkit", env=env)
        rows.append(("torch operators (rnnkit)", first, cached))
        first, cached = _child("cffi", cffi_dir, env=env), _child("cffi", cffi_dir, env=env)
        rows.append(("cffi, API mode from kernels.h", first, cached))
    lines = [
        "# Native kernels: build and call",
        "",
        f"`python -m benchmarks.native_build`: torch {torch.__version__}, {machine()}, 1 thread. Load average "
        f"(1, 5, 15 min) before: {before}; after: {load_average()}.",
        "",
        "| binding | first build (s) | load from the cache (s) | one call from Python (us) |",
        "|---|---:|---:|---:|",
    ]
    for label, first, cached in rows:
        if first.get("status") != "loaded":
            lines.append(f"| {label} | {first.get('status')}: {first.get('reason', '')} | | |")
            continue
        lines.append(f"| {label} | {first['load_seconds']:.2f} | {cached['load_seconds']:.3f} | "
                     f"{1e6 * cached['call_seconds']:.2f} |")
    write_results("\n".join(lines) + "\n", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
