"""Subnormal floats are flushed to zero in rnnkit's own processes, on every thread (rnnkit/denormals.py).

Each case runs in a fresh process with two threads: the mode is per thread and inherited when torch's worker
threads are created, so what matters is whether the call comes before the first parallel computation.
"""

import os
import subprocess
import sys
import textwrap

import torch

from rnnkit.denormals import denormals_flushed


def _python(code: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_probe_sees_subnormal_products_on_a_plain_process():
    """Without flushing, a product of subnormal values is not zero: the probe can fail."""
    assert _python("""
        import torch
        torch.set_num_threads(2)
        from rnnkit.denormals import denormals_flushed
        print(denormals_flushed())
    """) == "False"


def test_the_rnnkit_command_flushes_on_every_thread():
    """The ``rnnkit`` command (rnnkit.cli:run) flushes before anything computes: the worker threads flush too, so a
    confident model's training does not slow down (the G2P run of benchmarks/results/denormals.md)."""
    assert _python("""
        import sys
        import torch
        torch.set_num_threads(2)
        from rnnkit.cli import run
        sys.argv = ["rnnkit", "data", "list"]
        try:
            run()
        except SystemExit as stop:
            assert stop.code == 0
        from rnnkit.denormals import denormals_flushed
        print(denormals_flushed())
    """) == "True"


def test_flushing_after_the_worker_threads_exist_says_so():
    out = _python("""
        import warnings
        import torch
        torch.set_num_threads(2)
        torch.mm(torch.randn(512, 512), torch.randn(512, 512))  # the worker threads start here
        from rnnkit.denormals import flush_denormals
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flushed = flush_denormals()
        print(flushed, any("worker threads were created before" in str(w.message) for w in caught))
    """)
    assert out == "False True"


def test_the_library_leaves_the_mode_alone():
    """Importing rnnkit and running its layers does not change the process's floating-point mode: a drop-in layer
    computes what torch.nn computes, subnormal values included."""
    import rnnkit

    rnnkit.LSTM(4, 8)(torch.randn(3, 2, 4))
    assert not denormals_flushed()
