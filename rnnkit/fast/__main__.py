"""``python -m rnnkit.fast``: how rnnkit's fast path runs on this machine (compiler, flags, cache, active paths)."""

from __future__ import annotations

import os
import shlex

import torch

from rnnkit.fast import dispatch, native


def report() -> str:
    """The native build (compiler, flags, cache, library, time) and which paths are active, as text."""
    build = native.load()
    lines = [f"rnnkit fast path on {dispatch.cpuinfo_field('model name') or 'this CPU'}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads",
             f"native kernels: {build.status}" + (f" ({build.reason})" if build.reason else "")]
    if build.compiler:
        lines += [f"  C compiler: {shlex.join(build.compiler)} ({build.versions[0] if build.versions else '?'})",
                  f"  C++ compiler: {shlex.join(build.cxx)} ({build.versions[1] if len(build.versions) > 1 else '?'})",
                  f"  C flags: {' '.join(build.c_flags)}",
                  f"  C++ flags: {' '.join(flag for flag in build.cxx_flags if not flag.startswith('-I'))}",
                  f"  link flags: {' '.join(build.link_flags) or '(none)'}",
                  f"  cache: {build.cache_dir}",
                  f"  library: {build.path}"]
        if build.seconds is not None:
            built = f"  built in {build.seconds:.1f} s by this process"
            lines.append(built if build.seconds else "  loaded from the cache")
        lines.append(f"  threads: {'OpenMP, shared with torch' if build.openmp else 'serial'}")
    blas = native.has_blas()
    onednn = dispatch.products_onednn_for(dispatch.MIN_MACS)
    products = f"oneDNN from {dispatch.MIN_MACS:,} multiply-adds" if onednn else "torch (MKL)"
    lines += ["step loops:",
              f"  native-sequence (loop in C): {'active' if blas else 'off'}"
              + ("" if blas else " (needs the native kernels and torch's sgemm_)"),
              f"  native-step (C kernel per step): {'active' if build.status == 'loaded' else 'off'}",
              "  torch-ops: always available (float64, other devices, no compiler)",
              f"products: {products}"
              f" (RNNKIT_ONEDNN={os.environ.get('RNNKIT_ONEDNN', 'auto')}, CPU vendor {dispatch.cpu_vendor() or '?'})",
              f"settings: RNNKIT_KERNELS={os.environ.get('RNNKIT_KERNELS', '1')}, "
              f"RNNKIT_CACHE_DIR={os.environ.get('RNNKIT_CACHE_DIR', '(unset)')}, CC={os.environ.get('CC', '(unset)')}"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
