"""Tests for rnnkit.checkpoint: safe loading (no pickle), integrity checks, atomic writes, state encoding."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from rnnkit import checkpoint as ckpt
from rnnkit.checkpoint import (
    CheckpointError,
    decode_state,
    encode_state,
    has_checkpoint,
    load_checkpoint,
    load_model,
    load_weights,
    read_config,
    read_weights_file,
    save_checkpoint,
    write_config,
)


class TiedModel(nn.Module):
    """A language-model-like module whose output matrix is its embedding matrix (tied weights)."""

    def __init__(self, vocab_size: int = 7, size: int = 4) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, size)
        self.recurrent = nn.GRU(size, size, batch_first=True)
        self.output = nn.Linear(size, vocab_size)
        self.output.weight = self.embedding.weight

    def forward(self, tokens):
        out, _ = self.recurrent(self.embedding(tokens))  # (B, T, H)
        return self.output(out)  # (B, T, V)


def fresh(seed: int = 0, **kwargs) -> TiedModel:
    torch.manual_seed(seed)
    return TiedModel(**kwargs)


def same_weights(a: nn.Module | dict, b: nn.Module | dict) -> bool:
    a = a.state_dict() if isinstance(a, nn.Module) else a
    b = b.state_dict() if isinstance(b, nn.Module) else b
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------------------


def test_weights_round_trip_with_tied_parameters(tmp_path):
    model = fresh(0)
    save_checkpoint(tmp_path, model, {"task": "lm", "model": {"vocab_size": 7}}, name="best",
                    metadata={"step": 12})
    other = fresh(1)
    assert not same_weights(model, other)
    metadata = load_weights(tmp_path, other)
    assert same_weights(model, other)
    assert other.output.weight is other.embedding.weight  # loading keeps the tie
    assert metadata["step"] == "12" and metadata["format"] == "rnnkit.weights"
    assert json.loads(metadata["rnnkit.aliases"]) == {"output.weight": "embedding.weight"}
    stored = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert "output.weight" not in stored  # stored once
    config = read_config(tmp_path)
    assert config["task"] == "lm" and config["model"] == {"vocab_size": 7}
    assert config["format"] == "rnnkit.run" and config["format_version"] == 1 and "rnnkit_version" in config


def test_load_model_builds_from_config(tmp_path):
    model = fresh(0, vocab_size=9)
    save_checkpoint(tmp_path, model, {"model": {"vocab_size": 9}}, name="best")
    rebuilt, config = load_model(tmp_path, lambda c: TiedModel(**c["model"]))
    assert same_weights(model, rebuilt) and config["model"]["vocab_size"] == 9


def test_checkpoint_with_trainer_state_round_trip_resumes_adam_exactly(tmp_path):
    model = fresh(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    tokens = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(0))

    def step(m, opt):
        opt.zero_grad()
        m(tokens).square().mean().backward()
        opt.step()

    for _ in range(3):
        step(model, optimizer)
    carry = {"h": torch.randn(1, 3, 4), "pair": (torch.ones(2), None)}
    state = {"optimizer": optimizer.state_dict(), "carry": carry, "python_rng": random.getstate(),
             "numpy_rng": np.random.get_state(), "best": float("inf"), "nan": float("nan"), "step": 3}
    save_checkpoint(tmp_path, model, name="last", trainer_state=state)
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "last").iterdir()) == [
        "model.safetensors", "trainer.json", "trainer.safetensors"]

    loaded = load_checkpoint(tmp_path, "last", model=fresh(1))
    restored_model = fresh(1)
    restored_model.load_state_dict(loaded.weights)
    restored_optimizer = torch.optim.Adam(restored_model.parameters(), lr=0.5)
    restored_optimizer.load_state_dict(loaded.trainer_state["optimizer"])
    assert restored_optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    step(model, optimizer)
    step(restored_model, restored_optimizer)
    assert same_weights(model, restored_model)
    s = loaded.trainer_state
    assert torch.equal(s["carry"]["h"], carry["h"]) and s["carry"]["pair"][1] is None
    assert isinstance(s["carry"]["pair"], tuple)
    assert s["python_rng"] == state["python_rng"] and s["step"] == 3 and s["best"] == float("inf")
    assert np.isnan(s["nan"])
    assert s["numpy_rng"][0] == "MT19937" and np.array_equal(s["numpy_rng"][1], state["numpy_rng"][1])
    np.random.set_state(s["numpy_rng"])  # a valid NumPy state


def test_encode_state_refuses_objects_that_json_and_safetensors_cannot_hold():
    with pytest.raises(TypeError, match="cannot store a function"):
        encode_state({"fn": lambda x: x})
    skeleton, tensors = encode_state({1: "int key", "__tensor__": 2, (1, 2): [torch.zeros(1)]})
    json.dumps(skeleton, allow_nan=False)
    assert decode_state(skeleton, tensors)[1] == "int key"
    assert decode_state(skeleton, tensors)["__tensor__"] == 2
    assert torch.equal(decode_state(skeleton, tensors)[(1, 2)][0], torch.zeros(1))


def test_checkpoint_names(tmp_path):
    model = fresh()
    assert not has_checkpoint(tmp_path, "last") and not has_checkpoint(tmp_path, "best")
    save_checkpoint(tmp_path, model, name="epoch3")
    assert has_checkpoint(tmp_path, "epoch3") and (tmp_path / "checkpoints" / "epoch3").is_dir()
    assert load_checkpoint(tmp_path, "epoch3").trainer_state is None
    for bad in ("../escape", ".hidden", "", "a/b"):
        with pytest.raises(ValueError, match="checkpoint name"):
            save_checkpoint(tmp_path, model, name=bad)
    with pytest.raises(ValueError, match="weights only"):
        save_checkpoint(tmp_path, model, name="best", trainer_state={"step": 1})


# ----------------------------------------------------------------------------------------------------------
# Refusing bad files
# ----------------------------------------------------------------------------------------------------------


def _flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "missing": (lambda p: p.unlink(), "file not found"),
    "empty": (lambda p: p.write_bytes(b""), "truncated or empty"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(3000)), "not a readable safetensors"),
    "truncated in the data": (lambda p: p.write_bytes(p.read_bytes()[:-40]), "corrupt or truncated"),
    "truncated in the header": (lambda p: p.write_bytes(p.read_bytes()[:60]), "truncated"),
    "flipped data byte": (lambda p: _flip_byte(p, -10), "checksum"),
    "flipped header byte": (lambda p: _flip_byte(p, 8), "corrupt safetensors header"),
    "pickle": (lambda p: p.write_bytes(pickle.dumps({"weight": torch.zeros(2)})), "pickle"),
    "torch.save": (lambda p: torch.save(fresh().state_dict(), p), "torch.save"),
    "json": (lambda p: p.write_text('{"weight": [1, 2]}'), "JSON"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_bad_weights_file_is_a_checkpoint_error_naming_the_file(tmp_path, case):
    model = fresh(0)
    save_checkpoint(tmp_path, model, name="best")
    path = tmp_path / "model.safetensors"
    damage, expected = CORRUPTIONS[case]
    damage(path)
    target = fresh(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=expected) as caught:
        load_weights(tmp_path, target)
    assert str(path) in str(caught.value) or (case == "missing" and str(tmp_path) in str(caught.value))
    assert same_weights(target.state_dict(), before)  # the model was not touched
    assert isinstance(caught.value, ValueError)


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    other = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    save_checkpoint(tmp_path, other, name="best")
    expected = r"missing keys \['embedding.weight'.*unexpected keys \['0.bias'"
    with pytest.raises(CheckpointError, match=expected):
        load_weights(tmp_path, fresh())


def test_weights_with_other_shapes_name_the_key_and_shapes(tmp_path):
    save_checkpoint(tmp_path, fresh(vocab_size=9), name="best")
    expected = r"'embedding.weight' has shape \(9, 4\) in the file but \(7, 4\) in the model"
    with pytest.raises(CheckpointError, match=expected):
        load_weights(tmp_path, fresh(vocab_size=7))


def test_foreign_safetensors_is_flagged_as_not_written_by_rnnkit(tmp_path):
    safetensors.torch.save_file({"weight": torch.zeros(2, 2)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not written by rnnkit"):
        load_weights(tmp_path, nn.Linear(3, 3, bias=False))


@pytest.mark.parametrize("content, expected", [
    (None, "file not found"),
    (b"\x80\x04not json", "not valid JSON"),
    (b'{"task": "lm"}', "not an rnnkit file of format 'rnnkit.run'"),
    (b'{"format": "rnnkit.run", "format_version": 99}', "format version 99 is not supported"),
    (b"[1, 2]", "not an rnnkit file"),
])
def test_bad_config_is_a_checkpoint_error(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as caught:
        read_config(tmp_path)
    assert str(tmp_path / "config.json") in str(caught.value)


def test_trainer_state_that_does_not_match_its_tensors(tmp_path):
    save_checkpoint(tmp_path, fresh(), name="last", trainer_state={"carry": torch.ones(2)})
    directory = tmp_path / "checkpoints" / "last"
    document = json.loads((directory / "trainer.json").read_text())
    document["state"]["carry"]["__tensor__"] = "missing"
    (directory / "trainer.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="trainer.json: does not match trainer.safetensors"):
        load_checkpoint(tmp_path, "last")


def test_write_config_needs_json(tmp_path):
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        write_config(tmp_path, {"model": object()})
    with pytest.raises(ValueError, match="must be a mapping"):
        write_config(tmp_path, ["task"])


# ----------------------------------------------------------------------------------------------------------
# A malicious pickle planted where a checkpoint is expected never runs
# ----------------------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this object creates (opens for writing) the marker file: it stands for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    # The payload works: unpickling it does create its marker file (so the test below can fail).
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof))).close()
    assert proof.exists()

    run_dir = tmp_path / "run"
    model = fresh()
    save_checkpoint(run_dir, model, {"task": "lm"}, name="best")
    save_checkpoint(run_dir, model, name="last", trainer_state={"step": 1})
    marker = tmp_path / "marker"
    payload = pickle.dumps(Payload(marker))
    buffer = io.BytesIO()
    torch.save({"weight": Payload(marker)}, buffer)  # the same attack in torch.save's zip format
    last = run_dir / "checkpoints" / "last"

    from rnnkit.training import Trainer

    class Task:
        def __init__(self):
            self.model = fresh()

        def train_batches(self, epoch, rng):
            return []

        def loss(self, batch, carry):
            raise AssertionError("never trained")

    attempts = {
        run_dir / "model.safetensors": lambda: load_weights(run_dir, fresh()),
        run_dir / "config.json": lambda: load_model(run_dir, lambda c: fresh()),
        last / "model.safetensors": lambda: Trainer(Task(), run_dir, progress=False).resume(),
        last / "trainer.safetensors": lambda: load_checkpoint(run_dir, "last"),
        last / "trainer.json": lambda: Trainer(Task(), run_dir, progress=False).resume(),
    }
    for path, attempt in attempts.items():
        for planted in (payload, buffer.getvalue()):
            original = path.read_bytes()
            path.write_bytes(planted)
            with pytest.raises(CheckpointError) as caught:
                attempt()
            assert str(path) in str(caught.value)
            path.write_bytes(original)
    assert not marker.exists()


def test_pickle_message_says_why(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(Payload(tmp_path / "marker")))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_weights(tmp_path, fresh())
    assert not (tmp_path / "marker").exists()


# ----------------------------------------------------------------------------------------------------------
# Atomic writes: a crash during a save leaves the previous checkpoint loadable
# ----------------------------------------------------------------------------------------------------------


def filled_model(value: float) -> TiedModel:
    model = fresh()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def save_version(run_dir: Path, value: int) -> None:
    save_checkpoint(run_dir, filled_model(value), name="last",
                    trainer_state={"step": value, "moment": torch.full((3,), float(value))})
    save_checkpoint(run_dir, filled_model(value), name="best")


def loaded_version(run_dir: Path, name: str) -> int:
    """Load checkpoint ``name`` and check that all its parts come from the same save."""
    checkpoint = load_checkpoint(run_dir, name, model=fresh())
    values = {float(v.flatten()[0]) for v in checkpoint.weights.values()}
    assert len(values) == 1 and all(bool((v == v.flatten()[0]).all()) for v in checkpoint.weights.values())
    if name == "last":
        state = checkpoint.trainer_state
        assert values == {float(state["step"])}
        assert torch.equal(state["moment"], torch.full((3,), float(state["step"])))
        return state["step"]
    return int(values.pop())


class Crash(Exception):
    pass


def count_calls(monkeypatch, target, name):
    calls = []
    original = getattr(target, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, counting)
    return calls


def test_crash_at_every_rename_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        calls = count_calls(m, ckpt.os, "replace")
        save_version(tmp_path / "probe", 1)
    n_renames = len(calls)
    assert n_renames >= 5  # 3 files + old-dir swap + new dir for "last"; 1 file for "best"

    for crash_at in range(n_renames):
        run_dir = tmp_path / f"crash{crash_at}"
        save_version(run_dir, 1)
        save_version(run_dir, 2)  # the second save replaces a checkpoint (the swap path)
        original = os.replace
        counter = iter(range(10_000))

        def crashing(src, dst, _at=crash_at, _original=original, _counter=counter):
            if next(_counter) == _at:
                raise Crash(f"killed at rename {_at}")
            return _original(src, dst)

        with monkeypatch.context() as m:
            m.setattr(ckpt.os, "replace", crashing)
            with pytest.raises(Crash):
                save_version(run_dir, 3)
        assert loaded_version(run_dir, "last") in (2, 3)
        assert loaded_version(run_dir, "best") in (2, 3)
        save_version(run_dir, 4)  # the next save succeeds and cleans up
        assert loaded_version(run_dir, "last") == 4 and loaded_version(run_dir, "best") == 4
        leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
        assert leftovers == [] and not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_crash_between_the_two_renames_falls_back_to_the_previous_checkpoint(tmp_path, monkeypatch):
    save_version(tmp_path, 1)
    renames = []
    original = os.replace

    def crash_on_new_directory(src, dst):
        if Path(dst).name == "last" and Path(src).name.startswith(".last.tmp-"):
            renames.append(dst)
            raise Crash("killed after last -> .last.old")
        return original(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_on_new_directory)
    with pytest.raises(Crash):
        save_checkpoint(tmp_path, filled_model(2), name="last",
                        trainer_state={"step": 2, "moment": torch.full((3,), 2.0)})
    assert renames and not (tmp_path / "checkpoints" / "last").exists()
    assert (tmp_path / "checkpoints" / ".last.old").is_dir()
    assert has_checkpoint(tmp_path, "last") and loaded_version(tmp_path, "last") == 1


def test_crash_while_writing_a_file_leaves_the_previous_one(tmp_path, monkeypatch):
    save_version(tmp_path, 1)
    write_config(tmp_path, {"task": "lm"})

    def half_then_fail(path, data):
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt, "_write_file", half_then_fail)
    for name in ("last", "best"):
        with pytest.raises(OSError, match="No space"):
            save_checkpoint(tmp_path, filled_model(2), name=name,
                            trainer_state={"step": 2} if name == "last" else None)
        assert loaded_version(tmp_path, name) == 1
    with pytest.raises(OSError, match="No space"):
        write_config(tmp_path, {"task": "translate"})
    assert read_config(tmp_path)["task"] == "lm"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


KILLED_WRITER = textwrap.dedent("""
    import sys, torch
    from rnnkit.checkpoint import save_checkpoint
    run_dir = sys.argv[1]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 64), torch.nn.GRU(64, 64), torch.nn.Linear(64, 50))
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)
        save_checkpoint(run_dir, model, name="last",
                        trainer_state={"step": step, "moment": torch.full((1000,), float(step))})
        print(step, flush=True)
""")


def test_kill_during_saves_leaves_a_consistent_checkpoint(tmp_path):
    """A real SIGKILL (no Python cleanup runs) at a random moment of a save loop."""
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parent.parent)
    try:
        for _ in range(3):  # wait until some saves are complete
            assert process.stdout.readline(), "the writer process died"
        time.sleep(random.Random().uniform(0.0, 0.3))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    checkpoint = load_checkpoint(run_dir, "last")
    step = checkpoint.trainer_state["step"]
    assert step >= 3
    assert all(bool((w == step).all()) for w in checkpoint.weights.values())
    assert torch.equal(checkpoint.trainer_state["moment"], torch.full((1000,), float(step)))


def test_read_weights_file_reports_the_path(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 10) + b"{not json}")
    with pytest.raises(CheckpointError, match=f"{path}: corrupt safetensors header"):
        read_weights_file(path)


# ----------------------------------------------------------------------------------------------------------
# Hostile structure: nesting deep enough to exhaust the recursion limit, odd versions, edited trainer state
# ----------------------------------------------------------------------------------------------------------

DEEP = "[" * 100_000  # json.loads raises RecursionError (not ValueError) on this


def test_deeply_nested_json_is_a_checkpoint_error_not_a_recursion_error(tmp_path):
    header = DEEP.encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="corrupt safetensors header") as caught:
        load_weights(tmp_path, fresh())
    assert str(tmp_path / "model.safetensors") in str(caught.value) and len(str(caught.value)) < 500

    empty_data = hashlib.sha256(b"").hexdigest()  # the checksum of an empty data section: valid
    aliases = json.dumps({"__metadata__": {"rnnkit.aliases": DEEP, "rnnkit.sha256": empty_data}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(aliases)) + aliases)
    with pytest.raises(CheckpointError, match="corrupt list of tied parameters"):
        read_weights_file(tmp_path / "model.safetensors")

    (tmp_path / "config.json").write_text(DEEP)
    with pytest.raises(CheckpointError, match="not valid JSON") as caught:
        read_config(tmp_path)
    assert str(tmp_path / "config.json") in str(caught.value)

    save_checkpoint(tmp_path, fresh(), name="last", trainer_state={"step": 1})
    state_json = tmp_path / "checkpoints" / "last" / "trainer.json"
    state_json.write_text(DEEP)
    with pytest.raises(CheckpointError, match="trainer.json: not valid JSON"):
        load_checkpoint(tmp_path, "last")


@pytest.mark.parametrize("version", [True, 0, -1, "1", None, 1.0])
def test_format_version_must_be_a_positive_integer(tmp_path, version):
    (tmp_path / "config.json").write_text(json.dumps({"format": "rnnkit.run", "format_version": version}))
    with pytest.raises(CheckpointError, match="format_version must be an integer >= 1"):
        read_config(tmp_path)


class Counting:
    """A task with a real model whose checkpoints the trainer writes; resumed after an edit."""

    def __init__(self):
        self.model = fresh(3)
        self.tokens = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(0))

    def train_batches(self, epoch, rng):
        return [0, 1, 2]

    def loss(self, batch, carry):
        return self.model(self.tokens).square().mean(), 1, None


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s["loop"].update(step="seven"), "loop.step is 'seven'"),
    (lambda s: s["loop"].update(batch=-2), "loop.batch is -2"),
    (lambda s: s["loop"].update(early_stopped=1), "loop.early_stopped is 1"),
    (lambda s: s["loop"].update(unknown=1), "unexpected keyword argument 'unknown'"),
    (lambda s: s["rng"].update(python={"__tuple__": [3, "not a state", None]}), "trainer state does not fit"),
    (lambda s: s["rng"]["numpy"]["__tuple__"].__setitem__(0, "PCG64?"), "trainer state does not fit"),
    (lambda s: s.pop("schedule"), "KeyError: 'schedule'"),
])
def test_edited_trainer_state_is_refused_on_resume_and_the_model_is_untouched(tmp_path, edit, expected):
    from rnnkit.training import Trainer

    Trainer(Counting(), tmp_path, epochs=1, progress=False).train()
    path = tmp_path / "checkpoints" / "last" / "trainer.json"
    document = json.loads(path.read_text())
    edit(document["state"])
    path.write_text(json.dumps(document))
    task = Counting()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=expected) as caught:
        Trainer(task, tmp_path, epochs=2, progress=False).resume()
    assert str(tmp_path / "checkpoints" / "last") in str(caught.value)
    assert same_weights(task.model.state_dict(), before)


def _rewrite_header(path: Path, edit) -> None:
    """Edit the JSON header of a safetensors file, keeping the data section as it is."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + size:])


@pytest.mark.parametrize("edit", ["dtype", "shape", "swap", "alias"])
def test_a_header_edited_to_read_the_same_bytes_differently_is_corrupt(tmp_path, edit):
    """The data digest alone cannot see these: the bytes are intact, the header reads them as other values."""
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.arange(6, dtype=torch.float16).reshape(2, 3))
            self.b = nn.Parameter(torch.arange(6, 12, dtype=torch.float16).reshape(2, 3))
            self.c = self.a  # tied

    save_checkpoint(tmp_path, Pair(), name="best")
    path = tmp_path / "model.safetensors"
    read_weights_file(path)  # intact: loads

    def change(header):
        if edit == "dtype":
            header["a"]["dtype"] = "BF16"  # same size, both floating point: other numbers
        elif edit == "shape":
            header["a"]["shape"] = [3, 2]
        elif edit == "swap":
            header["a"], header["b"] = header["b"], header["a"]
        else:
            header["__metadata__"]["rnnkit.aliases"] = json.dumps({"c": "b"})

    _rewrite_header(path, change)
    with pytest.raises(CheckpointError, match="tensor names, types or shapes in the header") as caught:
        load_weights(tmp_path, Pair())
    assert str(path) in str(caught.value)


def test_files_without_the_layout_digest_still_load(tmp_path):
    """Checkpoints written before the layout digest existed carry only the data digest."""
    model = fresh(0)
    save_checkpoint(tmp_path, model, name="best")

    def data_digest_only(header):
        header["__metadata__"]["rnnkit.sha256"] = header["__metadata__"]["rnnkit.sha256"].split(":")[0]

    _rewrite_header(tmp_path / "model.safetensors", data_digest_only)
    target = fresh(1)
    load_weights(tmp_path, target)
    assert same_weights(model, target)


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m.pop("rnnkit.sha256"), "an rnnkit file without its checksum"),
    (lambda m: m.update({"rnnkit.sha25X": m.pop("rnnkit.sha256")}), "unknown rnnkit entries"),
    (lambda m: m.update({"rnnkit.sha256": m["rnnkit.sha256"][:-1] + "Z"}), "the checksum entry is damaged"),
    (lambda m: m.update(format="rnnkit.weightz"), "unknown rnnkit entries"),
])
def test_damage_cannot_switch_the_checksum_off(tmp_path, edit, expected):
    """Two faults at once (a damaged checksum entry and damaged data) must not pass as a file without checks."""
    save_checkpoint(tmp_path, fresh(0), name="best")
    path = tmp_path / "model.safetensors"
    _flip_byte(path, -3)
    _rewrite_header(path, lambda h: edit(h["__metadata__"]))
    with pytest.raises(CheckpointError, match=expected) as caught:
        load_weights(tmp_path, fresh(1))
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("skeleton, expected", [
    ({"__tensor__": "t", "device": "garbage"}, "unknown device 'garbage'"),
    ({"__tensor__": "t", "device": "meta"}, "unknown device 'meta'"),  # would load a tensor without data
    ({"__tensor__": "t", "device": 5}, "unknown device 5"),
    ({"__ndarray__": [2**70], "dtype": "uint32"}, "do not fit uint32"),
    ({"__ndarray__": [1], "dtype": "O"}, "plain numeric dtype"),
    ({"__ndarray__": [1], "dtype": "(1000,)f8"}, "plain numeric dtype"),
    ({"__float__": "1e5"}, "__float__ must be one of"),
])
def test_decode_state_refuses_what_rnnkit_never_writes(skeleton, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        decode_state(skeleton, {"t": torch.zeros(2)})
    assert decode_state({"__tensor__": "t", "device": "cuda:0"}, {"t": torch.zeros(2)}).shape == (2,)


def test_a_trainer_state_with_a_foreign_device_is_a_checkpoint_error(tmp_path):
    save_checkpoint(tmp_path, fresh(), name="last", trainer_state={"carry": torch.ones(2)})
    path = tmp_path / "checkpoints" / "last" / "trainer.json"
    document = json.loads(path.read_text())
    document["state"]["carry"]["device"] = "xla:0"
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="trainer.json: does not match trainer.safetensors.*unknown device"):
        load_checkpoint(tmp_path, "last")


# ----------------------------------------------------------------------------------------------------------
# Checkpoint averaging (issue 21)
# ----------------------------------------------------------------------------------------------------------


def test_averaging_two_checkpoints_gives_the_mean_of_their_weights(tmp_path):
    from rnnkit.checkpoint import average_checkpoints, average_weights

    a, b = fresh(1), fresh(2)
    for model in (a, b):
        model.register_buffer("counter", torch.tensor(7 if model is a else 9))
    save_checkpoint(tmp_path / "run", a, {"task": "lm", "model": {}}, name="step-4")
    save_checkpoint(tmp_path / "run", b, name="step-8")
    (tmp_path / "run" / "vocab.json").write_text("{}")
    out = average_checkpoints(tmp_path / "run", ["step-8", "step-4"], tmp_path / "averaged")
    averaged = fresh(3)
    averaged.register_buffer("counter", torch.tensor(0))
    load_weights(out, averaged)
    for name, value in averaged.state_dict().items():
        if name == "counter":
            assert int(value) == 7  # integer buffers: the last checkpoint's, not a mean
        else:
            torch.testing.assert_close(value, (a.state_dict()[name] + b.state_dict()[name]) / 2, rtol=0, atol=1e-7)
    assert averaged.output.weight is averaged.embedding.weight  # still tied after loading
    assert (out / "config.json").is_file() and (out / "vocab.json").read_text() == "{}"  # loads like the run
    one = average_weights([a.state_dict()])
    assert all(torch.equal(one[k], v) for k, v in a.state_dict().items())
    with pytest.raises(CheckpointError, match="other parameters"):
        average_weights([a.state_dict(), {"embedding.weight": a.embedding.weight}])
