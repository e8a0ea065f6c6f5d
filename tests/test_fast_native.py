"""rnnkit.fast.native: the C kernels of csrc/ built into typed torch operators, cached, checked.

Every operator is declared once (its schema in csrc/ops.cpp, its kernel in csrc/kernels.h) and a call that
disagrees raises instead of crashing; a declaration that disagrees with its definition fails the build, which
warns once and falls back to the fast path's torch operations. Builds in a fresh cache happen in subprocesses
(a process registers the operators once).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.fast import native

needs_compilers = pytest.mark.skipif(
    not (shutil.which(os.environ.get("CC", "cc")) and shutil.which(os.environ.get("CXX", "c++"))),
    reason="no C and C++ compilers: the fast path uses torch operations",
)
needs_kernels = pytest.mark.skipif(not native.loaded(), reason="the native kernels are not available here")


def _python(script: str, **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **environment}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)


@needs_compilers
def test_the_kernels_build_where_there_are_compilers():
    """With compilers the kernels must build (else the fast path silently runs its slower torch version)."""
    build = native.load()
    assert build.status == "loaded", build.reason
    assert build.path is not None and build.path.parent == build.cache_dir
    assert torch.ops.rnnkit.row_threads(1, 1) == 1


@needs_kernels
def test_a_call_that_disagrees_with_a_declaration_raises():
    """Wrong dtype, shape, stride or argument list: a RuntimeError naming the operator or the argument."""
    ops = torch.ops.rnnkit
    a, c, h = torch.zeros(2, 8), torch.zeros(2, 2), torch.zeros(2, 2)
    ops.lstm_step(a, c, h, None)
    with pytest.raises(RuntimeError, match="a must be a float32 CPU tensor, got Double"):
        ops.lstm_step(a.double(), c, h, None)
    with pytest.raises(RuntimeError, match=r"h must be 2 rows of at least 2 values"):
        ops.lstm_step(a, c, torch.zeros(3, 2), None)
    with pytest.raises(RuntimeError, match="factors must be 2 rows of at least 12 values"):
        ops.lstm_step(a, c, h, torch.zeros(2, 6))
    with pytest.raises(RuntimeError, match="unit column stride"):
        ops.lstm_step(torch.zeros(8, 2).t(), c, h, None)
    with pytest.raises(RuntimeError, match="missing value for argument 'factors'"):
        ops.lstm_step(a, c, h)
    with pytest.raises(RuntimeError, match="Expected a value of type 'List"):
        ops.rnn_sequence(3, torch.zeros(2, 2), torch.zeros(1, 1, 2), torch.zeros(2, 1, 2), False)
    hs, w = torch.zeros(3, 1, 2), torch.zeros(2, 2)
    with pytest.raises(RuntimeError, match="hs must be a contiguous buffer of at least 3 steps"):  # 2 steps + h_0
        ops.rnn_sequence([1, 1], w, torch.zeros(2, 1, 2), hs[:2], False)
    with pytest.raises(RuntimeError, match="non-increasing row counts"):
        ops.rnn_sequence([1, 2], w, torch.zeros(2, 1, 2), hs, False)


def test_the_cache_directory_must_be_the_users(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("RNNKIT_CACHE_DIR", str(shared))
    with pytest.raises(native.BuildError, match="others may write to it"):
        native._owned_cache_dir()
    shared.chmod(0o700)
    assert native._owned_cache_dir() == shared
    if os.getuid() == 0:  # root can give it away; others cannot create the case
        os.chown(shared, 65534, 65534)
        with pytest.raises(native.BuildError, match="belongs to user id 65534"):
            native._owned_cache_dir()
    fresh = tmp_path / "new" / "kernels"
    monkeypatch.setenv("RNNKIT_CACHE_DIR", str(fresh))
    assert native._owned_cache_dir() == fresh and stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_compiler_commands_are_split_like_a_shell(monkeypatch):
    monkeypatch.setenv("CC", "ccache gcc")
    assert native._command("CC", "cc") == ["ccache", "gcc"]
    monkeypatch.delenv("CC")
    assert native._command("CC", "no-such-compiler-here") == ["no-such-compiler-here"]


def test_disabled_by_the_environment_without_a_warning():
    done = _python("import warnings, torch, rnnkit\n"
                   "warnings.simplefilter('error')\n"
                   "from rnnkit.fast import native, dispatch\n"
                   "print(native.load().status, dispatch.step_loop(torch.zeros(2, 3)))\n"
                   "out, _ = rnnkit.GRU(3, 4)(torch.randn(5, 2, 3, requires_grad=True))\n",
                   RNNKIT_KERNELS="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["disabled", "torch-ops"]


@needs_compilers
@pytest.mark.slow
def test_a_fresh_build_through_a_compiler_wrapper_keeps_subnormals_and_reports(tmp_path):
    """In a fresh cache, with the compilers behind a wrapper command (as CC="ccache gcc" puts them): the build
    works; loading it does not switch the process to flush-to-zero (a library linked with -ffast-math would, through
    crtfastmath.o, silently changing torch's and numpy's results); the doctor reports it."""
    script = ("import numpy, torch\n"
              "from rnnkit.fast import native, doctor\n"
              "build = native.load()\n"
              "assert build.status == 'loaded', build.reason\n"
              "assert build.compiler == ['env', 'cc'] and build.seconds > 0\n"
              "tiny = numpy.float32(1e-40)\n"  # a subnormal float32: 0 under flush-to-zero / denormals-are-zero
              "print(float(tiny * numpy.float32(1.0)), float(torch.tensor(1e-40) * 1.0))\n"
              "print(doctor())\n")
    done = _python(script, RNNKIT_CACHE_DIR=str(tmp_path), CC="env cc", CXX="env c++")
    assert done.returncode == 0, done.stderr
    first, *report = done.stdout.splitlines()
    numpy_product, torch_product = (float(v) for v in first.split())
    assert numpy_product > 9e-41 and torch_product > 9e-41  # not flushed to 0 (pytest.approx would accept 0)
    text = "\n".join(report)
    assert "C compiler: env cc" in text and f"cache: {tmp_path}" in text and "built in" in text
    assert "-ffast-math" in text and "native-sequence" in text
    assert len(list(tmp_path.glob("rnnkit-kernels-*.so"))) == 1


@needs_kernels
@pytest.mark.slow
def test_a_cached_library_that_will_not_load_is_built_again(tmp_path):
    broken = tmp_path / native.load().path.name  # the name this machine's build has
    broken.write_bytes(b"\x7fELF not a library")
    broken.chmod(0o700)
    done = _python("from rnnkit.fast import native\nbuild = native.load()\nprint(build.status, build.seconds > 0)",
                   RNNKIT_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["loaded", "True"]
    assert broken.read_bytes()[:4] == b"\x7fELF" and broken.stat().st_size > 1000


def _sabotaged_build(tmp_path: Path, name: str, old: str, new: str) -> subprocess.CompletedProcess:
    """Build csrc/ with ``old`` replaced by ``new`` in file ``name``, in a subprocess with a fresh cache; it runs a
    GRU with gradients twice and prints the build's status and reason."""
    sources = tmp_path / "csrc"
    shutil.copytree(native.CSRC, sources)
    text = (sources / name).read_text()
    assert old in text
    (sources / name).write_text(text.replace(old, new))
    script = ("import warnings, torch, rnnkit\n"
              "from pathlib import Path\n"
              "from rnnkit.fast import native\n"
              f"native.CSRC = Path({str(sources)!r})\n"
              "torch.manual_seed(0)\n"
              "layer = rnnkit.GRU(3, 4)\n"
              "for _ in range(2):\n"
              "    output, _ = layer(torch.randn(5, 2, 3, requires_grad=True))\n"
              "    output.sum().backward()\n"
              "build = native.load()\n"
              "print(build.status)\n"
              "print(build.reason)\n")
    return _python(script, RNNKIT_CACHE_DIR=str(tmp_path / "cache"))


@needs_compilers
def test_a_declaration_that_disagrees_with_its_kernel_fails_the_build_not_the_process(tmp_path):
    """kernels.h declares lstm_forward with one argument fewer than kernels.c defines: the C compiler refuses it;
    the process warns once (cause and fallback) and runs the layer on torch operations."""
    done = _sabotaged_build(tmp_path, "kernels.h", "void lstm_forward(idx n, idx H, const float *a, idx sa,",
                            "void lstm_forward(idx n, const float *a, idx sa,")
    assert done.returncode == 0, done.stderr
    status, reason = done.stdout.splitlines()[:2]
    assert status == "failed" and "compiling csrc/kernels.c failed" in reason and "lstm_forward" in reason
    warnings = [line for line in done.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == 1 and "the fast path runs its torch operations instead" in warnings[0]


@needs_compilers
@pytest.mark.slow
def test_a_schema_that_disagrees_with_its_function_fails_the_build_not_the_process(tmp_path):
    """ops.cpp declares row_threads's first argument a float: registering the operators fails with torch's
    message, which the process reports (and falls back) instead of aborting in dlopen."""
    done = _sabotaged_build(tmp_path, "ops.cpp", '"row_threads(int n, int hidden) -> int"',
                            '"row_threads(float n, int hidden) -> int"')
    assert done.returncode == 0, done.stderr
    status, reason = done.stdout.splitlines()[:2]
    assert status == "failed" and "registering the operators failed" in reason
    assert "schema" in reason.lower()


def test_python_m_rnnkit_fast_and_rnnkit_doctor_print_the_report():
    report = rnnkit.fast.doctor()
    assert "native kernels:" in report and "step loops:" in report and "products:" in report
    done = subprocess.run([sys.executable, "-m", "rnnkit.fast"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("rnnkit fast path on")
    from rnnkit.cli import main

    assert main(["doctor"]) == 0
