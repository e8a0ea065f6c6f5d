"""Fuzzing the checkpoint readers of rnnkit.checkpoint with hypothesis: weights files, run configs and trainer
states that are random bytes, mutated rnnkit files, or structurally valid files with hostile contents.

A reader may answer in two ways only: exactly what was saved, or a :class:`CheckpointError` naming the file.
Never another exception, never tensors that differ from the saved ones (the data and layout digests see every
damaging edit), and never code: nothing is unpickled, whatever the bytes.

The heavy tests run ``FUZZ_EXAMPLES`` (10,000) inputs each and are marked slow; ``*_quick`` variants run a
few hundred in the fast suite. Hypothesis is derandomized, so CI sees the same inputs on every run.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from rnnkit.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_config,
    read_weights_file,
    save_checkpoint,
    write_config,
)

FUZZ_EXAMPLES = 10_000
QUICK_EXAMPLES = 200


def run_fuzz(check: Callable, strategy: st.SearchStrategy, examples: int) -> int:
    count = 0

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(strategy)
    def property_holds(example):
        nonlocal count
        count += 1
        check(example)

    property_holds()
    return count


class Tied(nn.Module):
    """Small, with tied weights (an alias in the header), two dtypes and an integer buffer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(5, 3)
        self.gru = nn.GRU(3, 3)
        self.output = nn.Linear(3, 5)
        self.output.weight = self.embedding.weight
        self.scale16 = nn.Parameter(torch.randn(2, 3).half())
        self.register_buffer("count", torch.arange(4))


def build_originals(directory: Path) -> dict[str, bytes]:
    """The files rnnkit writes for a run: weights, config, trainer state (tensors and JSON)."""
    model = Tied()
    optimizer = torch.optim.Adam(model.parameters())
    loss = model.gru(model.embedding(torch.tensor([[1, 2]])))[0].sum() + model.scale16.float().sum()
    loss.backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": {"torch": torch.get_rng_state()}, "step": 3,
             "carry": (torch.ones(1, 1, 3), None), "best": float("inf")}
    save_checkpoint(directory, model, {"task": "lm", "model": {"vocab_size": 5}}, name="best",
                    metadata={"step": "3"})
    save_checkpoint(directory, model, name="last", trainer_state=state)
    last = directory / "checkpoints" / "last"
    return {"weights": (directory / "model.safetensors").read_bytes(),
            "config": (directory / "config.json").read_bytes(),
            "trainer.json": (last / "trainer.json").read_bytes(),
            "trainer.safetensors": (last / "trainer.safetensors").read_bytes()}


@pytest.fixture()
def scratch(tmp_path):
    """A directory in memory (tmpfs) when there is one: thousands of files are written."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="rnnkit-fuzz-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _originals() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="rnnkit-fuzz-") as directory:
        return build_originals(Path(directory))


ORIGINALS = _originals()
# Unpickling PAYLOAD would create MARKER: it stands for arbitrary code. It is among the hostile inputs of
# every reader, and the marker must never appear.
MARKER = Path(tempfile.gettempdir()) / "rnnkit-fuzz-unpickled"  # fixed: the inputs must not vary by run


class Payload:
    def __reduce__(self):
        return (open, (str(MARKER), "w"))


PAYLOAD = pickle.dumps({"weight": Payload()})


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def mutate(data: bytes, most: int = 4):
    """``data`` with 1 to ``most`` random edits: flips, inserts, deletes, a cut."""

    @st.composite
    def mutated(draw):
        buffer = bytearray(data)
        for _ in range(draw(st.integers(1, most))):
            kind = draw(st.sampled_from(["flip", "flip", "insert", "delete", "cut"]))
            at = draw(st.integers(0, len(buffer)))
            if kind == "flip" and at < len(buffer):
                buffer[at] = draw(st.integers(0, 255))
            elif kind == "insert":
                buffer[at:at] = draw(st.binary(min_size=1, max_size=4))
            elif kind == "delete" and at < len(buffer):
                del buffer[at:at + draw(st.integers(1, 16))]
            elif kind == "cut":
                del buffer[at:]
        return bytes(buffer)

    return mutated()


json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars | st.sampled_from([{"__tensor__": "optimizer.state.0.exp_avg", "device": "cpu"},
                                    {"__tensor__": "nope"}, {"__tuple__": []}, {"__float__": "nan"},
                                    {"__ndarray__": [1, 2], "dtype": "uint32"}, {"__dict__": [[0, 1]]}]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["__tensor__", "__tuple__", "__dict__", "__float__", "__ndarray__", "dtype", "device",
                         "format", "format_version", "state", "step", "a"]) | st.text(max_size=4),
        children, max_size=3),
    max_leaves=8)


def json_paths(value, prefix=()):
    """Every place in a JSON document where a value could be replaced."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from json_paths(child, (*prefix, index))


def replace_at(document, path, new):
    if not path:
        return new
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return document


def edit_json(data: bytes):
    """A JSON document with one to three of its values (anywhere in the tree) replaced by random JSON."""

    @st.composite
    def edited(draw):
        document = json.loads(data)
        for _ in range(draw(st.integers(1, 3))):
            paths = list(json_paths(document))
            # A copy: sampled_from hands out the same objects each time, and replace_at edits in place.
            document = replace_at(document, draw(st.sampled_from(paths)), copy.deepcopy(draw(json_values)))
        return json.dumps(document, allow_nan=draw(st.booleans())
                          if _finite(document) else True).encode()

    return edited()


def _finite(document) -> bool:
    try:
        json.dumps(document, allow_nan=False)
    except ValueError:
        return False
    return True


@st.composite
def random_headers(draw):
    """A safetensors file whose JSON header is random entries (dtypes, shapes, offsets), with random data."""
    entries = {}
    for name in draw(st.lists(st.text(max_size=4), max_size=3)):
        entries[name] = {"dtype": draw(st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "X"])),
                         "shape": draw(st.lists(st.integers(-1, 2**40), max_size=3)),
                         "data_offsets": draw(st.lists(st.integers(-1, 64), min_size=0, max_size=3))}
    if draw(st.booleans()):
        entries["__metadata__"] = draw(st.dictionaries(
            st.sampled_from(["format", "rnnkit.sha256", "rnnkit.layout_sha256", "rnnkit.aliases", "x"]),
            st.text(max_size=6) | st.just('{"a": "b"}') | st.just("[" * 3000), max_size=3))
    header = json.dumps(entries).encode()
    size = draw(st.sampled_from([len(header), len(header), len(header) + 3, 2**63]))
    return struct.pack("<Q", size) + header + draw(st.binary(max_size=64))


def hostile_bytes():
    return st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\x80\x04", b"PK\x03\x04", b"{}", b"[" * 5000,
                                                              PAYLOAD, PAYLOAD + b"\x00" * 64]),
                     mutate(PAYLOAD))


# ----------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
                                        for x, y in ((a[k], b[k]) for k in a))


def check_weights(scratch: Path):
    path = scratch / "model.safetensors"
    original, _ = read_weights_file(_write(scratch / "original.safetensors", ORIGINALS["weights"]))

    def check(example):
        kind, data = example
        _write(path, data)
        try:
            tensors, metadata = read_weights_file(path)
        except CheckpointError as err:
            assert str(err).startswith(str(path)) and len(str(err)) < 1000, str(err)[:300]
            return
        assert isinstance(metadata, dict) and all(isinstance(t, torch.Tensor) for t in tensors.values())
        if kind == "damaged":  # one or two faults: loads only if no byte that matters changed, as the original
            assert tensors_equal(tensors, original), "a damaged weights file loaded other tensors"

    return check


# One or two faults are always seen (or harmless). Three or more coordinated ones can make a file look like
# a foreign safetensors file without checksums (SECURITY.md): for those only "no crash" is asserted.
weights_inputs = st.one_of(st.tuples(st.just("damaged"), mutate(ORIGINALS["weights"], most=2)),
                           st.tuples(st.just("damaged"), mutate(ORIGINALS["weights"], most=2)),
                           st.tuples(st.just("random"), mutate(ORIGINALS["weights"], most=6)),
                           st.tuples(st.just("random"), random_headers()),
                           st.tuples(st.just("random"), hostile_bytes()))


def check_config(scratch: Path):
    run_dir = scratch / "run"
    run_dir.mkdir(exist_ok=True)

    def check(data):
        _write(run_dir / "config.json", data)
        try:
            config = read_config(run_dir)
        except CheckpointError as err:
            assert str(err).startswith(str(run_dir / "config.json")) and len(str(err)) < 1000
            return
        assert config["format"] == "rnnkit.run" and type(config["format_version"]) is int
        assert config["format_version"] == 1
        write_config(scratch / "rewritten", {k: v for k, v in config.items() if _finite(v)})

    return check


config_inputs = st.one_of(mutate(ORIGINALS["config"]), edit_json(ORIGINALS["config"]), hostile_bytes())


def check_trainer_state(scratch: Path):
    run_dir = scratch / "run"
    last = run_dir / "checkpoints" / "last"

    def check(example):
        which, data = example
        if not last.is_dir():
            last.mkdir(parents=True)
            _write(last / "model.safetensors", ORIGINALS["weights"])
        other = "trainer.safetensors" if which == "trainer.json" else "trainer.json"
        _write(last / other, ORIGINALS[other])
        _write(last / which, data)
        try:
            checkpoint = load_checkpoint(run_dir, "last", model=Tied())
        except CheckpointError as err:
            assert str(last) in str(err) and len(str(err)) < 1500, str(err)[:300]
            return
        # The state may be any JSON-like value here (Trainer.resume checks its shape); its tensors are real.
        for tensor in _tensors(checkpoint.trainer_state):
            assert tensor.device.type == "cpu" and not tensor.is_meta

    return check


trainer_inputs = st.one_of(
    st.tuples(st.just("trainer.json"), edit_json(ORIGINALS["trainer.json"])),
    st.tuples(st.just("trainer.json"), edit_json(ORIGINALS["trainer.json"])),
    st.tuples(st.just("trainer.json"), mutate(ORIGINALS["trainer.json"])),
    st.tuples(st.just("trainer.safetensors"), mutate(ORIGINALS["trainer.safetensors"])),
    st.tuples(st.sampled_from(["trainer.json", "trainer.safetensors"]), hostile_bytes()),
)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CHECKS = {
    "read_weights_file": (check_weights, weights_inputs),
    "read_config": (check_config, config_inputs),
    "load_checkpoint_trainer_state": (check_trainer_state, trainer_inputs),
}


def test_the_originals_load():
    """The inputs are mutations of files that do load (else the fuzzing would prove little)."""
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        build_originals(directory)
        checkpoint = load_checkpoint(directory, "last", model=Tied())
        assert checkpoint.trainer_state["step"] == 3 and read_config(directory)["task"] == "lm"
    assert set(safetensors.torch.load(ORIGINALS["weights"])) == set(Tied().state_dict()) - {"output.weight"}
    pickle.loads(PAYLOAD)["weight"].close()  # the payload works: unpickling it creates the marker
    assert MARKER.exists()
    MARKER.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("reader", list(CHECKS))
def test_fuzz_checkpoint_reader(scratch, reader, capsys):
    make_check, strategy = CHECKS[reader]
    count = run_fuzz(make_check(scratch), strategy, FUZZ_EXAMPLES)
    assert count >= FUZZ_EXAMPLES
    assert not MARKER.exists(), "a pickle was unpickled"
    with capsys.disabled():
        print(f"\n[fuzz] {reader}: {count} inputs, only the saved values or CheckpointError")


@pytest.mark.parametrize("reader", list(CHECKS))
def test_fuzz_checkpoint_reader_quick(scratch, reader):
    make_check, strategy = CHECKS[reader]
    assert run_fuzz(make_check(scratch), strategy, QUICK_EXAMPLES) >= QUICK_EXAMPLES
    assert not MARKER.exists(), "a pickle was unpickled"
