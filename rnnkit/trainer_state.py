"""The trainer's state on disk: nested Python structures with tensors -> a JSON skeleton + a flat dict of
tensors (stored as safetensors by :mod:`rnnkit.checkpoint`), and back, without ever pickling.

JSON cannot hold tensors, tuples, dicts with int keys (optimizer state is keyed by parameter index) or
non-finite floats, so those are tagged::

    {"__tensor__": KEY, "device": "cpu"}      a tensor stored in the safetensors file under KEY
    {"__tuple__": [...]}                      a tuple (e.g. Adam's betas, Python's RNG state)
    {"__dict__": [[key, value], ...]}         a dict whose keys are not all plain strings
    {"__float__": "nan" | "inf" | "-inf"}
    {"__ndarray__": [...], "dtype": "uint32"} a NumPy array (NumPy's RNG state)

Anything else (functions, arbitrary objects) is refused, so nothing executable is ever written.

Example::

    skeleton, tensors = encode_state({"step": 10, "optimizer": optimizer.state_dict()})
    state = decode_state(json.loads(json.dumps(skeleton)), tensors)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["encode_state", "decode_state"]


_TAGS = ("__tensor__", "__tuple__", "__dict__", "__float__", "__ndarray__")


def encode_state(obj: Any) -> tuple[Any, dict[str, Tensor]]:
    """Split a nested structure into a JSON-able skeleton and a flat dict of tensors."""
    tensors: dict[str, Tensor] = {}

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, Tensor):
            key = path or "tensor"
            while key in tensors:
                key += "'"
            tensors[key] = value.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key, "device": str(value.device)}
        if isinstance(value, bool) or value is None or isinstance(value, str | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, np.ndarray):
            return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
        if isinstance(value, np.generic):
            return encode(value.item(), path)
        if isinstance(value, tuple):
            return {"__tuple__": [encode(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            plain = all(isinstance(k, str) and not k.startswith("__") for k in value)
            if plain:
                return {k: encode(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            items = []
            for k, v in value.items():
                if not isinstance(k, str | int | float | bool | tuple) and k is not None:
                    raise TypeError(f"cannot store a dict key of type {type(k).__name__} at {path!r}")
                items.append([encode(k, path), encode(v, f"{path}.{k}" if path else str(k))])
            return {"__dict__": items}
        raise TypeError(f"cannot store a {type(value).__name__} at {path or 'the top level'!r} "
                        f"(only tensors, numbers, strings, lists, tuples and dicts)")

    return encode(obj, ""), tensors


def decode_state(skeleton: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`encode_state`. Tensors return to their device when it exists here, else CPU."""

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        tag = next((t for t in _TAGS if t in value), None)
        if tag == "__tensor__":
            tensor = tensors[value["__tensor__"]]
            return tensor.to(_device_or_cpu(value.get("device", "cpu")))
        if tag == "__tuple__":
            return tuple(decode(v) for v in value["__tuple__"])
        if tag == "__dict__":
            return {_hashable(decode(k)): decode(v) for k, v in value["__dict__"]}
        if tag == "__float__":
            if value["__float__"] not in _NON_FINITE:
                raise ValueError(f"__float__ must be one of {sorted(_NON_FINITE)}, got {value['__float__']!r}")
            return float(value["__float__"])
        if tag == "__ndarray__":
            return _decode_ndarray(value["__ndarray__"], value.get("dtype"))
        return {k: decode(v) for k, v in value.items()}

    return decode(skeleton)


_NON_FINITE = {"nan", "inf", "-inf"}


def _decode_ndarray(values: Any, dtype_name: Any) -> np.ndarray:
    """A NumPy array from JSON numbers: plain numeric dtypes only (what RNG states use), so an edited file
    cannot ask for object arrays or a dtype with a billion-element sub-array per entry."""
    try:
        dtype = np.dtype(dtype_name) if isinstance(dtype_name, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf" or dtype.shape != ():
        raise ValueError(f"__ndarray__ dtype must be a plain numeric dtype like 'uint32', got {dtype_name!r}")
    try:
        return np.asarray(values, dtype=dtype)
    except OverflowError as err:
        raise ValueError(f"__ndarray__ values do not fit {dtype}: {err}") from None


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key


def _device_or_cpu(name: Any) -> torch.device:
    """The device a tensor was saved from, if this machine has it, else the CPU. Only CPU, CUDA and MPS: a
    ``meta`` tensor (no data) or another backend's would break training later, far from the file."""
    try:
        device = torch.device(name) if isinstance(name, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r} (expected 'cpu', 'cuda' or 'mps')")
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        return torch.device("cpu")
    return device
