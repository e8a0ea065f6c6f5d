"""rnnkit's small JSON files (vocabularies, label sets, BPE tokenizers): a ``format`` and ``version`` header,
atomic saves, and one :class:`~rnnkit.data.errors.DataError` naming the file for anything wrong on load.

Example::

    save_json_text(path, json.dumps({"format": "rnnkit.vocab", "version": FORMAT_VERSION, ...}))
    obj = parse_json_object(read_json_text(path), path, "rnnkit.vocab")    # DataError unless it is one
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

from rnnkit.checkpoint import atomic_write_bytes
from rnnkit.data.errors import DataError

__all__ = ["FORMAT_VERSION", "JSONFile", "save_json_text", "read_json_text", "load_json", "parse_json_object"]

FORMAT_VERSION = 1


def save_json_text(path: str | Path, text: str) -> None:
    """Write a vocabulary's JSON atomically: a save killed half-way leaves the previous file, never half of one
    (a run directory must always reload)."""
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_json_text(path: str | Path) -> str:
    """The text of a JSON file; a missing, unreadable or non-UTF-8 file raises DataError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, None, "is a directory, expected a JSON file") from None
    except OSError as err:
        raise DataError(path, None, f"cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise DataError(path, None, f"invalid UTF-8 at byte offset {err.start}") from None


def load_json(text: str) -> Any:
    """``json.loads``; absurdly deep nesting (RecursionError in the parser) counts as invalid JSON too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def parse_json_object(text: str, source: str | Path | None, expected_format: str) -> dict[str, Any]:
    """Parse ``text`` and check its ``format`` and ``version`` keys; errors name ``source``."""
    try:
        obj = load_json(text)
    except json.JSONDecodeError as err:
        raise DataError(source, err.lineno, f"invalid JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise DataError(source, None, f"not an rnnkit file of this kind: expected \"format\": "
                                      f"\"{expected_format}\", found {found!r}")
    if obj.get("version") != FORMAT_VERSION:
        raise DataError(source, None, f"unsupported {expected_format} version {obj.get('version')!r} "
                                      f"(this rnnkit reads version {FORMAT_VERSION})")
    return obj


class JSONFile:
    """``save`` and ``load`` for a class that writes itself as JSON text (``to_json``) and reads itself back
    (``from_json(text, source)``): vocabularies, label sets, BPE tokenizers."""

    def save(self, path: str | Path) -> None:
        """Write ``to_json()`` to ``path`` atomically."""
        save_json_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read ``path`` back; a missing, unreadable or malformed file raises DataError naming it."""
        return cls.from_json(read_json_text(path), source=path)
