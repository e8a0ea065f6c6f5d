"""Building, caching and loading rnnkit's native kernels: ``csrc/`` compiled on first use into typed torch operators.

The sources are real files in the package: ``csrc/kernels.h`` declares every kernel once, ``csrc/kernels.c``
defines them (C99, OpenMP), ``csrc/ops.cpp`` wraps each as a torch operator ``torch.ops.rnnkit.<name>`` with a
schema that every call is checked against, and checks each tensor's dtype, shape and strides before its kernel
reads or writes it (docs/fast-path.md says why torch operators rather than ctypes or cffi).

Build, on the first call of :func:`load` in a process: the C file with the system C compiler (``$CC``, else
``cc``; ``CC="ccache gcc"`` works) and ``-O3 -march=native -ffast-math`` (so that glibc's libmvec vectorises expf
and tanhf), the C++ file with ``$CXX`` (else ``c++``) against torch's headers, linked without -ffast-math (linking
with it would switch the whole process to flush-to-zero, see tests/test_fast_native.py). With ``-fopenmp`` when
torch runs on GNU OpenMP (the Linux wheels), so that the kernels share torch's threads; a compiler without OpenMP
gets a serial build. On a CPU with AVX-512, ``-mprefer-vector-width=512`` (GCC keeps to 256-bit vectors
otherwise); a compiler that refuses it builds without it.

Cache: ``$RNNKIT_CACHE_DIR``, else ``kernels/`` in rnnkit's cache (``$RNNKIT_CACHE``, else ``~/.cache/rnnkit``),
which must belong to the user and be writable by no one else (a library there is code this process will run);
the file name hashes the sources, the flags, the compilers, torch and the CPU's flags. A cached library that will
not load is deleted and built again. Nothing is built with ``RNNKIT_KERNELS=0`` or on a platform other than Linux
or macOS. A build that fails warns once, naming the cause and the fallback (the fast path's torch operations:
the same results, slower); ``python -m rnnkit.fast`` (or ``rnnkit doctor``) prints what happened.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["Build", "BuildError", "load", "loaded", "operators", "has_blas", "cache_dir", "torch_flags", "C_FLAGS",
           "CXX_FLAGS", "PARALLEL_THRESHOLD"]

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("kernels.h", "kernels.c", "ops.cpp")

#: The kernels: optimised for this CPU; -ffast-math for libmvec's vector expf and tanhf (the sigmoid in
#: kernels.c is written so that no argument overflows under it).
C_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-fvisibility=hidden", "-std=c99"]
#: The operators' glue: checks and calls, no arithmetic worth optimising hard.
CXX_FLAGS = ["-O1", "-fPIC", "-fvisibility=hidden", "-std=c++20"]

#: Values (n x H) from which a step's rows are split over the OpenMP threads (csrc/kernels.c's default; the
#: tests lower it with ``torch.ops.rnnkit.set_parallel_threshold`` to run their small steps threaded).
PARALLEL_THRESHOLD = 16384


@dataclass
class Build:
    """How the native kernels came to be (or not to be) in this process; what ``python -m rnnkit.fast`` prints.

    Attributes:
        status: "loaded", "disabled" (RNNKIT_KERNELS=0), "unsupported" (platform) or "failed".
        reason: why not loaded ("" when loaded): the setting, or the failing step and its error.
        compiler, cxx: the C and C++ compiler commands; versions: their first ``--version`` lines.
        c_flags, cxx_flags, link_flags: the flags of the build that was used (or last tried).
        cache_dir: where libraries are kept; path: the loaded library.
        seconds: time this process spent compiling (0.0: the library came from the cache).
        openmp: whether the kernels split a step's rows over torch's OpenMP threads.
    """

    status: str = "failed"
    reason: str = ""
    compiler: list[str] = field(default_factory=list)
    cxx: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    c_flags: list[str] = field(default_factory=list)
    cxx_flags: list[str] = field(default_factory=list)
    link_flags: list[str] = field(default_factory=list)
    cache_dir: Path | None = None
    path: Path | None = None
    seconds: float | None = None
    openmp: bool = False


class BuildError(RuntimeError):
    """A step of the build failed; the message names the step and carries the compiler's own error."""


_build: Build | None = None
_library: ctypes.CDLL | None = None  # kept referenced: the operators' code lives in it
_blas: bool | None = None


def load() -> Build:
    """Build (or find in the cache) and load the kernels once per process; what happened, as a :class:`Build`."""
    global _build
    if _build is None:
        _build = _load()
        if _build.status == "failed":
            warnings.warn(
                f"rnnkit: the native kernels are not available ({_build.reason}); the fast path runs its torch "
                "operations instead (same results, slower). `python -m rnnkit.fast` shows the details.",
                RuntimeWarning, stacklevel=3,
            )
    return _build


def loaded() -> bool:
    """Whether ``torch.ops.rnnkit`` holds the kernels in this process (building them on the first call)."""
    return load().status == "loaded"


def operators():
    """``torch.ops.rnnkit``: the kernels' operators (call only when :func:`loaded`)."""
    return torch.ops.rnnkit


def has_blas() -> bool:
    """Whether the step loops in C can run: the kernels loaded and torch's ``sgemm_`` found (and exact on a test
    product; see csrc/ops.cpp). x86-64 Linux wheels of torch export it from libtorch_cpu."""
    global _blas
    if _blas is None:
        _blas = loaded() and bool(operators().has_blas())
    return _blas


def cache_dir() -> Path:
    """``$RNNKIT_CACHE_DIR``, else ``kernels/`` in rnnkit's cache directory."""
    override = os.environ.get("RNNKIT_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    from rnnkit.data.packages import default_cache_dir

    return default_cache_dir() / "kernels"


def _load() -> Build:
    setting = os.environ.get("RNNKIT_KERNELS", "1")
    if setting not in ("0", "1"):
        return Build(reason=f"RNNKIT_KERNELS must be 0 or 1, got {setting!r}")
    if setting == "0":
        return Build(status="disabled", reason="RNNKIT_KERNELS=0")
    if sys.platform not in ("linux", "darwin"):
        return Build(status="unsupported", reason=f"no native kernels on {sys.platform} (Linux and macOS only)")
    build = Build(compiler=_command("CC", "cc", "gcc"), cxx=_command("CXX", "c++", "g++"))
    try:
        build.cache_dir = _owned_cache_dir()
        build.versions = [_version(build.compiler), _version(build.cxx)]
        global _library
        _library = _load_or_build(build)
        build.status = "loaded"
    except BuildError as error:
        build.reason = str(error)
    return build


def _command(variable: str, *defaults: str) -> list[str]:
    """The compiler command from ``$CC``/``$CXX`` (split like a shell: "ccache gcc"), else the first default on PATH."""
    given = os.environ.get(variable)
    if given:
        return shlex.split(given)
    found = next((name for name in defaults if shutil.which(name)), defaults[0])
    return [found]


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise BuildError(f"no usable compiler {shlex.join(command)!r}: {error}") from error
    if done.returncode != 0:
        raise BuildError(f"{shlex.join(command)} --version failed: {done.stderr.strip()[:300]}")
    return (done.stdout.strip().splitlines() or [""])[0]


def _owned_cache_dir() -> Path:
    """The cache directory, created private if missing; refused unless it belongs to this user and no one else
    may write to it (a library there is code this process will run)."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _check_owned(directory)
    except OSError as error:
        raise BuildError(f"cannot use the cache directory {directory}: {error}") from error
    return directory


def _check_owned(path: Path) -> None:
    info = path.lstat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise BuildError(f"refusing {path}: it belongs to user id {info.st_uid}, not to this user ({os.getuid()})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BuildError(f"refusing {path}: others may write to it (mode {stat.filemode(info.st_mode)})")
    if stat.S_ISLNK(info.st_mode):
        raise BuildError(f"refusing {path}: it is a symbolic link")


def _variants(build: Build) -> list[tuple[list[str], list[str], bool]]:
    """(C flags, link flags, openmp) to try in order: OpenMP where torch runs on GNU OpenMP, then serial; each
    with the wide vectors first on a CPU with AVX-512."""
    wide = ["-mprefer-vector-width=512"] if "avx512f" in _cpu_flags().split() else []
    threads = [(["-fopenmp"], ["-fopenmp"], True)] if _torch_uses_libgomp() else []
    threads.append((["-fopenmp-simd"], [], False))
    return [(C_FLAGS + extra + vector, link, openmp) for extra, link, openmp in threads
            for vector in ([wide, []] if wide else [[]])]


def _cpu_flags() -> str:
    """What -march=native depends on: the CPU's feature flags (so that a shared cache never serves another CPU)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _torch_uses_libgomp() -> bool:
    """Whether torch runs on GNU OpenMP (libgomp, as the Linux wheels do): only then is the OpenMP build one
    runtime with torch's rather than a second thread pool competing for the same cores."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


def torch_flags() -> tuple[list[str], list[str]]:
    """Compile and link flags for code against torch's C++ API (its headers, ABI and libraries)."""
    from torch.utils import cpp_extension

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    libraries = cpp_extension.library_paths()
    compile_flags = [f"-D_GLIBCXX_USE_CXX11_ABI={abi}"] + [f"-I{path}" for path in cpp_extension.include_paths()]
    link_flags = [f"-L{path}" for path in libraries] + [f"-Wl,-rpath,{path}" for path in libraries]
    return compile_flags, link_flags + ["-lc10", "-ltorch_cpu"]


def _key(build: Build, c_flags: list[str], link_flags: list[str]) -> str:
    """The library's name: a hash of everything that changes what it contains."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((CSRC / name).read_bytes())
    for part in [*c_flags, "|", *link_flags, "|", *CXX_FLAGS, "|", *build.compiler, *build.cxx, *build.versions,
                 torch.__version__, str(Path(torch.__file__).parent), _cpu_flags()]:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:20]


def _load_or_build(build: Build) -> ctypes.CDLL:
    """The first variant's library that is in the cache and loads, else the first one that builds; registered."""
    variants = [(variant, build.cache_dir / f"rnnkit-kernels-{_key(build, variant[0], variant[1])}.so")
                for variant in _variants(build)]
    for (c_flags, link_flags, openmp), path in variants:
        if path.exists():
            library = _open(path)
            if library is not None:
                build.c_flags, build.link_flags, build.openmp, build.path, build.seconds = (
                    c_flags, link_flags, openmp, path, 0.0)
                build.cxx_flags = list(CXX_FLAGS)
                return _register(library)
            path.unlink(missing_ok=True)  # it will not load: build it again
    started = time.perf_counter()
    torch_compile, torch_link = torch_flags()
    build.cxx_flags = CXX_FLAGS + torch_compile
    errors = []
    with tempfile.TemporaryDirectory(dir=build.cache_dir) as scratch:
        operators_object, kernels_object = Path(scratch) / "ops.o", Path(scratch) / "kernels.o"
        # The C++ glue (torch's headers: most of the build's time) compiles while the C kernels do, once for all
        # variants.
        glue = _start([*build.cxx, *build.cxx_flags, "-c", str(CSRC / "ops.cpp"), "-o", str(operators_object)])
        try:
            for (c_flags, link_flags, openmp), path in variants:
                build.c_flags, build.link_flags, build.openmp = c_flags, link_flags, openmp
                try:
                    _finish(_start([*build.compiler, *c_flags, "-c", str(CSRC / "kernels.c"), "-o",
                                    str(kernels_object)]), "compiling csrc/kernels.c")
                except BuildError as error:
                    errors.append(str(error))
                    continue  # e.g. no OpenMP: the next variant, at last the plain serial one
                if glue is not None:
                    _finish(glue, "compiling csrc/ops.cpp")
                    glue = None
                built = Path(scratch) / "library.so"
                _finish(_start([*build.cxx, "-shared", str(kernels_object), str(operators_object), "-o", str(built),
                                *link_flags, *torch_link, "-lm"]), "linking")
                built.chmod(0o700)
                os.replace(built, path)  # atomic: another process sees the whole file or none
                library = _open(path)
                if library is None:
                    raise BuildError(f"the library just built ({path}) does not load")
                build.path, build.seconds = path, time.perf_counter() - started
                return _register(library)
        finally:
            if glue is not None:
                glue[1].kill()
                glue[1].wait()
    raise BuildError(errors[-1] if errors else "no build variant to try")


def _open(path: Path) -> ctypes.CDLL | None:
    """Load a library from the cache (after checking that it is this user's), or None if it does not load."""
    _check_owned(path)
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        return None


def _register(library: ctypes.CDLL) -> ctypes.CDLL:
    try:
        register = library.rnnkit_register_operators
    except AttributeError as error:
        raise BuildError("the library has no rnnkit_register_operators") from error
    register.restype = ctypes.c_char_p
    message = register()
    if message is not None:
        raise BuildError(f"registering the operators failed: {message.decode(errors='replace').splitlines()[0]}")
    return library


def _start(command: list[str]) -> tuple[list[str], subprocess.Popen]:
    try:
        return command, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as error:
        raise BuildError(f"cannot run {command[0]!r}: {error}") from error


def _finish(started: tuple[list[str], subprocess.Popen], step: str) -> None:
    command, process = started
    try:
        _, errors = process.communicate(timeout=600)
    except subprocess.TimeoutExpired as error:
        process.kill()
        raise BuildError(f"{step} took more than 600 s") from error
    if process.returncode != 0:
        first = next((line for line in errors.splitlines() if "error" in line), errors.strip()[:300])
        raise BuildError(f"{step} failed ({shlex.join(command[:1])}): {first.strip()}")
