"""Run directories and checkpoints: safe to load (no pickle, no code), atomic to write.

A run directory holds everything needed to reload a model and nothing that executes code on load::

    RUN_DIR/
      config.json                 run config: {"format": "rnnkit.run", "format_version": 1, "rnnkit_version",
                                  "task", "model": {...}, "data": {...}, "training": {...}, ...}
      model.safetensors           the weights to use: the best on validation ("best" checkpoint)
      metrics.jsonl               training log, one JSON object a line (written by rnnkit.training)
      checkpoints/
        last/                     everything needed to resume training exactly
          model.safetensors       weights
          trainer.safetensors     the tensors of the trainer state (optimizer moments, RNG state, TBPTT carry)
          trainer.json            the rest of the trainer state (counters, schedule, structure) and a
                                  format marker; tensors appear in it as {"__tensor__": KEY}
        best-STEP/, step-STEP/    weights of the N best evaluations and of the N latest checkpoints
                                  (training's keep_best / keep_last), for :func:`average_checkpoints`
        NAME/                     any other named checkpoint, same layout

Safety. Weights and tensors are read only as safetensors (a JSON header and raw little-endian arrays) and
structure only as JSON, so loading never runs code: a pickle (or ``torch.save`` zip) planted where a
checkpoint is expected is refused with :class:`CheckpointError` before anything interprets it.

Integrity. Every safetensors file that rnnkit writes carries in its header metadata the SHA-256 of its data
section and the SHA-256 of its tensor layout (names, dtypes, shapes, offsets, tied aliases), in one required
entry, so flipped or missing bytes are detected on load, in the data and in the header alike: any one or two
faults are caught or harmless (fuzzed in tests/test_checkpoint_fuzz.py). Digests detect damage, not
forgery: whoever can write the file can recompute them (SECURITY.md). Loading checks the file against the model:
missing or unexpected keys and shape mismatches are reported by name. Every problem a user can meet
(missing file, truncated or corrupt file, foreign file, another architecture's weights) raises one error
class, :class:`CheckpointError` (a ``ValueError``), whose message names the file and the problem.

Atomicity. A file is written to a temporary file in the same directory, flushed, fsync-ed, moved over the
old one with ``os.replace`` (atomic on POSIX and Windows), and the directory is fsync-ed. A checkpoint
directory is written whole under a temporary name, then swapped in: ``last`` -> ``.last.old``,
``.last.tmp-*`` -> ``last``, ``.last.old`` removed. A kill at any point leaves either the previous or the new
checkpoint complete; if it lands between the two renames, the loader falls back to ``.last.old``.

Example::

    from rnnkit.checkpoint import save_checkpoint, load_weights, read_config
    save_checkpoint("runs/x", model, {"task": "lm", "model": model.config.to_dict()}, name="best")
    config = read_config("runs/x")                 # the dict above, plus format marker and version
    model = build_model(config["task"], config["model"])
    load_weights("runs/x", model)                  # CheckpointError if anything does not match
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from rnnkit.trainer_state import decode_state, encode_state  # re-exported: the trainer state codec

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "RUN_FORMAT",
    "FORMAT_VERSION",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "load_model",
    "has_checkpoint",
    "checkpoint_dir",
    "write_config",
    "read_config",
    "save_weights_file",
    "read_weights_file",
    "encode_state",
    "decode_state",
    "atomic_write_bytes",
    "atomic_write_json",
    "BEST_PREFIX",
    "STEP_PREFIX",
    "kept_checkpoints",
    "average_weights",
    "average_checkpoints",
]

RUN_FORMAT = "rnnkit.run"
WEIGHTS_FORMAT = "rnnkit.weights"
STATE_FORMAT = "rnnkit.trainer_state"
FORMAT_VERSION = 1

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINTS_DIR = "checkpoints"
STATE_TENSORS_FILE = "trainer.safetensors"
STATE_JSON_FILE = "trainer.json"
BEST_PREFIX = "best-"  # checkpoints/best-STEP: the weights of one of the keep_best best evaluations
STEP_PREFIX = "step-"  # checkpoints/step-STEP: the weights of one of the keep_last latest checkpoints

# In the safetensors header metadata: "DATA:LAYOUT", the SHA-256 (hex) of the data section and of the tensor
# layout (names, dtypes, shapes, offsets, aliases). One required entry, not two, so that damage to one name
# cannot switch a check off unseen. Files of earlier rnnkit versions hold "DATA" alone.
_DIGEST_KEY = "rnnkit.sha256"
_DIGEST_FORMAT = re.compile(r"([0-9a-f]{64})(?::([0-9a-f]{64}))?")
_ALIASES_KEY = "rnnkit.aliases"  # {"output.weight": "embedding.weight"}: tied parameters stored once
_RNNKIT_KEYS = (_DIGEST_KEY, _ALIASES_KEY)
_MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


class CheckpointError(ValueError):
    """A run directory or checkpoint file that cannot be used: the message names the file and the problem."""


@dataclass
class Checkpoint:
    """A checkpoint read from disk: ``weights`` (state dict), ``metadata`` (the weights file's header
    metadata), ``trainer_state`` (decoded, tensors included; None if the checkpoint holds weights only)
    and ``path`` (the file or directory it came from)."""

    weights: dict[str, Tensor]
    metadata: dict[str, str]
    trainer_state: dict[str, Any] | None
    path: Path


# ----------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable. Not possible on Windows (directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write, flush and fsync ``data`` to ``path`` (not atomic by itself: used on temporary names)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: readers see the old content or the new, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (no NaN/Infinity), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------------------
# safetensors files, read and checked without ever unpickling
# ----------------------------------------------------------------------------------------------------------


def _layout_digest(header: Mapping[str, Any]) -> str:
    """SHA-256 of what the header says about the tensors (names, dtypes, shapes, offsets) and of the tied
    aliases. The data digest alone would miss a header edited to read the same bytes differently: F16 as
    BF16, one (2, 3) matrix as (3, 2), two same-shaped tensors swapped by name."""
    metadata = header.get("__metadata__") or {}
    layout = {"tensors": {k: v for k, v in header.items() if k != "__metadata__"},
              "aliases": metadata.get(_ALIASES_KEY)}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()


def _safetensors_bytes(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> bytes:
    """Serialise with SHA-256 digests of the data section and of the tensor layout in the header.

    The data section and the tensor entries depend only on the tensors, not on the metadata, so both are
    hashed from a first serialisation and the digests put in the header of the second.
    """
    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    first = safetensors.torch.save(plain, metadata=dict(metadata) or None)
    (header_size,) = struct.unpack("<Q", first[:8])
    digest = hashlib.sha256(first[8 + header_size:]).hexdigest()
    layout = _layout_digest(json.loads(first[8:8 + header_size]))
    return safetensors.torch.save(plain, metadata={**metadata, _DIGEST_KEY: f"{digest}:{layout}"})


def _read_file(path: Path) -> bytes:
    """The bytes of ``path``; a missing or unreadable file is a :class:`CheckpointError` naming it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return path.read_bytes()
    except OSError as err:  # permissions, I/O errors, a file removed meanwhile
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None


def _short(err: object, limit: int = 200) -> str:
    """A message (or an exception's) cut to ``limit`` characters: a corrupt file can make very long ones."""
    text = str(err)
    return text if len(text) <= limit else text[:limit] + "..."


def _describe_foreign(head: bytes) -> str:
    """A short guess at what a file that is not safetensors is, from its first bytes."""
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return "it looks like a Python pickle; rnnkit never unpickles files (pickles can run code)"
    if head[:4] == b"PK\x03\x04":
        return "it looks like a zip/torch.save archive (pickle inside); rnnkit never unpickles files"
    if head[:1] in (b"{", b"["):
        return "it looks like JSON, not safetensors"
    return "it is not a safetensors file"


def read_weights_file(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``, tied aliases restored.

    Raises :class:`CheckpointError` naming the file if it is missing, not safetensors (pickle, zip, random
    bytes), truncated, or its data does not match the digest rnnkit wrote.
    """
    path = Path(path)
    data = _read_file(path)
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated or empty ({len(data)} bytes); {_describe_foreign(data)}")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > min(len(data) - 8, _MAX_HEADER_BYTES):
        hint = _describe_foreign(data[:8])
        if hint == "it is not a safetensors file" and data[8:9] == b"{":
            hint = "it is truncated (the header says it is longer than the file)"
        raise CheckpointError(f"{path}: not a readable safetensors file: {hint}")
    try:
        header = json.loads(data[8:8 + header_size])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: absurdly deep nesting
        raise CheckpointError(f"{path}: corrupt safetensors header ({_short(err)})") from None
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: corrupt safetensors header (metadata is not a string map)")
    _check_rnnkit_metadata(path, metadata)
    try:
        tensors = safetensors.torch.load(data)
    except Exception as err:  # the library raises its own SafetensorError for truncation and bad offsets
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from None
    if _DIGEST_KEY in metadata:  # required in rnnkit's own files (_check_rnnkit_metadata)
        digests = _DIGEST_FORMAT.fullmatch(metadata[_DIGEST_KEY])
        if digests is None:
            raise CheckpointError(f"{path}: corrupt header metadata (the checksum entry is damaged)")
        if hashlib.sha256(data[8 + header_size:]).hexdigest() != digests[1]:
            raise CheckpointError(f"{path}: corrupt: the tensor data does not match the checksum written with it")
        if digests[2] is not None and _layout_digest(header) != digests[2]:
            raise CheckpointError(f"{path}: corrupt: the tensor names, types or shapes in the header do not "
                                  f"match the checksum written with them")
    if _ALIASES_KEY in metadata:
        try:
            aliases = json.loads(metadata[_ALIASES_KEY])
            for name, source in aliases.items():
                tensors[name] = tensors[source]
        except (ValueError, KeyError, AttributeError, TypeError, RecursionError) as err:
            raise CheckpointError(f"{path}: corrupt list of tied parameters ({_short(err)!r})") from None
    return tensors, dict(metadata)


def _check_rnnkit_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """The digests only help if damage cannot switch them off: a file rnnkit wrote must still carry its data
    digest, and a damaged ``rnnkit.*`` key name (which would hide a digest) is itself damage."""
    unknown = sorted(k for k in metadata if k.startswith("rnnkit.") and k not in _RNNKIT_KEYS)
    fmt = metadata.get("format", "")
    if unknown or (fmt.startswith("rnnkit.") and fmt not in (WEIGHTS_FORMAT, STATE_FORMAT)):
        raise CheckpointError(f"{path}: corrupt header metadata (unknown rnnkit entries "
                              f"{_short(unknown or [fmt], 120)})")
    if (fmt in (WEIGHTS_FORMAT, STATE_FORMAT) or _ALIASES_KEY in metadata) and _DIGEST_KEY not in metadata:
        raise CheckpointError(f"{path}: corrupt header metadata: an rnnkit file without its checksum")


def save_weights_file(path: str | Path, state_dict: Mapping[str, Tensor],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically. Tied tensors (the same tensor under two names, e.g. a
    language model's shared embedding and output matrix) are stored once and restored under both names."""
    stored: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"state_dict[{name!r}] is a {type(tensor).__name__}, expected a tensor")
        identity = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()),
                    tensor.device)
        if tensor.numel() > 0 and identity in seen:
            aliases[name] = seen[identity]
            continue
        seen[identity] = name
        # A private copy: views into one storage cannot be written by safetensors.
        stored[name] = tensor.detach().to("cpu").contiguous().clone()
    meta = {"format": WEIGHTS_FORMAT, **(metadata or {})}
    if aliases:
        meta[_ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    atomic_write_bytes(path, _safetensors_bytes(stored, meta))


def _check_against_model(path: Path, weights: Mapping[str, Tensor], metadata: Mapping[str, str],
                         model: nn.Module) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    origin = "" if metadata.get("format") == WEIGHTS_FORMAT else " (the file was not written by rnnkit)"
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise CheckpointError(f"{path}: weights do not match the model ({type(model).__name__}): "
                              f"{'; '.join(parts)}{origin}")
    for name, tensor in expected.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: '{name}' has shape {tuple(weights[name].shape)} in the file but "
                                  f"{tuple(tensor.shape)} in the model{origin}")
        if weights[name].dtype.is_floating_point != tensor.dtype.is_floating_point:
            raise CheckpointError(f"{path}: '{name}' is {weights[name].dtype} in the file but {tensor.dtype} "
                                  f"in the model{origin}")


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


# ----------------------------------------------------------------------------------------------------------
# Run config
# ----------------------------------------------------------------------------------------------------------


def _rnnkit_version() -> str:
    import rnnkit  # at call time: rnnkit/__init__.py may import this module

    return str(getattr(rnnkit, "__version__", "unknown"))


def write_config(run_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """Write ``RUN_DIR/config.json`` atomically: ``config`` plus the format marker and rnnkit version.

    ``config`` must be JSON-serialisable (model config, task, data and vocabulary info, training settings).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping (dict), got {type(config).__name__}")
    document = {**config, "format": RUN_FORMAT, "format_version": FORMAT_VERSION,
                "rnnkit_version": _rnnkit_version()}
    path = Path(run_dir) / CONFIG_FILE
    try:
        atomic_write_json(path, document)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config is not JSON-serialisable: {err}") from None
    return path


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN_DIR/config.json``; :class:`CheckpointError` if it is missing, not JSON or not an rnnkit
    run config."""
    path = Path(run_dir) / CONFIG_FILE
    return _read_json(path, RUN_FORMAT)


def _read_json(path: Path, expected_format: str) -> dict[str, Any]:
    raw = _read_file(path)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: absurdly deep nesting
        raise CheckpointError(f"{path}: not valid JSON ({_describe_foreign(raw[:8])}; {_short(err)})") from None
    if not isinstance(document, dict) or document.get("format") != expected_format:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(f"{path}: not an rnnkit file of format {expected_format!r} "
                              f"(found {_short(repr(found), 80)})")
    version = document.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: format_version must be an integer >= 1, found {_short(repr(version), 80)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version!r} is not supported by this rnnkit "
                              f"(reads up to {FORMAT_VERSION}); upgrade rnnkit")
    return document


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"checkpoint name must be a plain directory name like 'last', got {name!r}")


def checkpoint_dir(run_dir: str | Path, name: str = "last") -> Path:
    """Where checkpoint ``name`` lives: ``RUN_DIR/checkpoints/NAME`` (``"best"`` is ``RUN_DIR`` itself)."""
    _check_name(name)
    run_dir = Path(run_dir)
    return run_dir if name == "best" else run_dir / CHECKPOINTS_DIR / name


def _existing_checkpoint_dir(run_dir: Path, name: str) -> Path | None:
    """The complete directory of checkpoint ``name``, falling back to the previous one if a save was killed
    between its two renames."""
    directory = checkpoint_dir(run_dir, name)
    if name == "best":
        return directory if (directory / WEIGHTS_FILE).is_file() else None
    if directory.is_dir():
        return directory
    previous = directory.parent / f".{name}.old"
    return previous if previous.is_dir() else None


def has_checkpoint(run_dir: str | Path, name: str = "last") -> bool:
    """Whether ``RUN_DIR`` holds checkpoint ``name`` (for "best": ``model.safetensors``)."""
    return _existing_checkpoint_dir(Path(run_dir), name) is not None


def save_checkpoint(run_dir: str | Path, model: nn.Module, config: Mapping[str, Any] | None = None, *,
                    name: str = "last", trainer_state: Mapping[str, Any] | None = None,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Save ``model``'s weights (and optionally the trainer state) as checkpoint ``name``, atomically.

    * ``name="best"`` writes ``RUN_DIR/model.safetensors`` (the model the run directory reloads to).
    * any other name writes the directory ``RUN_DIR/checkpoints/NAME/`` with ``model.safetensors`` and, if
      ``trainer_state`` is given, ``trainer.safetensors`` + ``trainer.json`` (see :func:`encode_state` for
      what it may contain).
    * ``config``, if given, is (re)written to ``RUN_DIR/config.json`` first (:func:`write_config`).
    * ``metadata`` (strings) goes into the weights file header, e.g. ``{"step": "120"}``.

    Returns the path written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write_config(run_dir, config)
    metadata = {k: str(v) for k, v in (metadata or {}).items()}
    if name == "best":
        if trainer_state is not None:
            raise ValueError("the 'best' checkpoint holds weights only; give trainer_state to another name")
        path = run_dir / WEIGHTS_FILE
        save_weights_file(path, model.state_dict(), metadata)
        return path

    directory = checkpoint_dir(run_dir, name)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{name}.tmp-*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    try:
        save_weights_file(staging / WEIGHTS_FILE, model.state_dict(), metadata)
        if trainer_state is not None:
            skeleton, tensors = encode_state(dict(trainer_state))
            atomic_write_bytes(staging / STATE_TENSORS_FILE,
                               _safetensors_bytes(tensors, {"format": STATE_FORMAT}))
            atomic_write_json(staging / STATE_JSON_FILE, {"format": STATE_FORMAT,
                                                          "format_version": FORMAT_VERSION,
                                                          "state": skeleton})
        _fsync_directory(staging)
        # Swap in: the complete old checkpoint is kept as .NAME.old until the new one has its final name.
        previous = parent / f".{name}.old"
        if directory.exists():
            if previous.exists():
                shutil.rmtree(previous)
            os.replace(directory, previous)
            _fsync_directory(parent)
        os.replace(staging, directory)
        _fsync_directory(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(parent / f".{name}.old", ignore_errors=True)
    return directory


def load_checkpoint(run_dir: str | Path, name: str = "last", model: nn.Module | None = None) -> Checkpoint:
    """Read checkpoint ``name`` (weights, and the trainer state if it has one), checked for integrity and, if
    ``model`` is given, against the model's keys and shapes (the model itself is not modified)."""
    run_dir = Path(run_dir)
    directory = _existing_checkpoint_dir(run_dir, name)
    if directory is None:
        where = run_dir / WEIGHTS_FILE if name == "best" else checkpoint_dir(run_dir, name)
        raise CheckpointError(f"{where}: file not found (no checkpoint {name!r} in {run_dir})")
    weights_path = directory / WEIGHTS_FILE
    weights, metadata = read_weights_file(weights_path)
    if model is not None:
        _check_against_model(weights_path, weights, metadata, model)
    trainer_state = None
    json_path = directory / STATE_JSON_FILE
    if name != "best" and (json_path.exists() or (directory / STATE_TENSORS_FILE).exists()):
        document = _read_json(json_path, STATE_FORMAT)
        tensors_path = directory / STATE_TENSORS_FILE
        tensors, state_meta = read_weights_file(tensors_path)
        if state_meta.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{tensors_path}: not an rnnkit trainer-state file")
        try:
            trainer_state = decode_state(document.get("state"), tensors)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as err:
            raise CheckpointError(f"{json_path}: does not match {tensors_path.name} ({_short(err)!r})") from None
    return Checkpoint(weights=weights, metadata=metadata, trainer_state=trainer_state, path=directory)


def load_weights(run_dir: str | Path, model: nn.Module, name: str = "best") -> dict[str, str]:
    """Load checkpoint ``name``'s weights into ``model`` (default: ``RUN_DIR/model.safetensors``).

    The file is checked (integrity, keys, shapes) before the model is touched. Returns the file's metadata.
    """
    checkpoint = load_checkpoint(run_dir, name, model=model)
    model.load_state_dict(checkpoint.weights, strict=True)
    return checkpoint.metadata


def load_model(run_dir: str | Path, build: Callable[[dict[str, Any]], nn.Module],
               name: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from ``config.json`` and load its weights: ``build(config) -> nn.Module`` makes the
    (untrained) model from the run config, e.g. ``lambda c: build_model(c["task"], c["model"])``.

    Returns ``(model, config)``.
    """
    config = read_config(run_dir)
    try:
        model = build(config)
    except (KeyError, TypeError) as err:
        path = Path(run_dir) / CONFIG_FILE
        raise CheckpointError(f"{path}: cannot build the model from it ({err!r})") from None
    load_weights(run_dir, model, name=name)
    return model, config


# ----------------------------------------------------------------------------------------------------------
# Checkpoint averaging
# ----------------------------------------------------------------------------------------------------------


def kept_checkpoints(run_dir: str | Path, prefix: str) -> list[tuple[int, str]]:
    """``(step, name)`` of the kept checkpoints ``checkpoints/PREFIX-STEP`` (``BEST_PREFIX`` or
    ``STEP_PREFIX``), the latest first."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    found = [(int(path.name[len(prefix):]), path.name) for path in folder.glob(f"{prefix}*")
             if path.is_dir() and path.name[len(prefix):].isdigit()] if folder.is_dir() else []
    return sorted(found, reverse=True)


def average_weights(states: list[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of state dicts with the same names and shapes (summed in float64, returned in each
    tensor's own dtype). Integer tensors (counters) are taken from the last state; names that share one
    tensor in the first state (tied weights) share the averaged one."""
    if not states:
        raise ValueError("average_weights needs at least one state dict")
    first = states[0]
    for index, state in enumerate(states[1:], start=1):
        if set(state) != set(first):
            raise CheckpointError(f"state {index} has other parameters than state 0: "
                                  f"{_few(sorted(set(state) ^ set(first)))}")
        for name, tensor in state.items():
            if tensor.shape != first[name].shape:
                raise CheckpointError(f"{name} has shape {tuple(tensor.shape)} in state {index} but "
                                      f"{tuple(first[name].shape)} in state 0")
    averaged: dict[str, Tensor] = {}
    shared: dict[tuple, str] = {}
    for name, tensor in first.items():
        identity = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() > 0 and identity in shared:  # tied: the same tensor under another name
            averaged[name] = averaged[shared[identity]]
            continue
        shared[identity] = name
        if tensor.is_floating_point():
            total = torch.stack([state[name].double() for state in states]).sum(dim=0)
            averaged[name] = (total / len(states)).to(tensor.dtype)
        else:
            averaged[name] = states[-1][name].clone()
    return averaged


def average_checkpoints(run_dir: str | Path, names: list[str], out: str | Path) -> Path:
    """Average the weights of checkpoints ``names`` of ``run_dir`` (:func:`average_weights`; Vaswani et al.
    2017 average the last checkpoints of a run, as fairseq's average_checkpoints.py and OpenNMT's
    average_models.py do) into a run directory ``out`` that loads like ``run_dir``: its JSON files
    (config.json, vocabularies, label sets) are copied beside the averaged ``model.safetensors``, so
    ``rnnkit eval OUT`` scores it on the same sources. Returns ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    if not names:
        raise ValueError(f"{run_dir}: no checkpoints to average")
    checkpoints = [load_checkpoint(run_dir, name) for name in names]
    weights = average_weights([checkpoint.weights for checkpoint in checkpoints])
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(run_dir.glob("*.json")):
        atomic_write_bytes(out / path.name, path.read_bytes())
    steps = [checkpoint.metadata.get("step", "?") for checkpoint in checkpoints]
    save_weights_file(out / WEIGHTS_FILE, weights, {"averaged": ",".join(names), "steps": ",".join(steps)})
    return out
