"""The README and SECURITY.md say what is true: their examples run and do what their comments say, every test
command they cite selects tests that exist, every file they name exists, and the command-line synopsis matches
the parser. (The claims themselves are checked by the tests the documents cite; this file keeps those citations
honest.)"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import torch
from _pytest.mark.expression import Expression

from rnnkit import cli

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = {name: (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "SECURITY.md")}
README = DOCUMENTS["README.md"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def block_with(marker: str) -> str:
    found = [block for block in python_blocks(README) if marker in block]
    assert len(found) == 1, f"expected one python example with {marker!r}, found {len(found)}"
    return found[0]


def test_the_ten_line_lstm_example_does_what_its_comments_say():
    namespace: dict = {}
    exec(block_with("lengths=lengths"), namespace)  # noqa: S102 (the README's own example)
    lstm, x, lengths, out, h_n = (namespace[k] for k in ("lstm", "x", "lengths", "out", "h_n"))
    assert out.shape == (3, 5, 32) and h_n.shape == (2 * 2, 3, 16)  # (num_layers * 2, B, H)
    for b, n in enumerate(lengths.tolist()):
        assert torch.count_nonzero(out[b, n:]) == 0  # zero past each length
        with torch.no_grad():
            alone, (h_alone, _) = lstm(x[b:b + 1, :n])  # the sequence on its own, without padding
        # padding never leaks: outputs and each direction's final state are those of the unpadded sequence
        torch.testing.assert_close(out[b, :n], alone[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(h_n[:, b], h_alone[:, 0], rtol=1e-5, atol=1e-6)


def test_the_streaming_example_computes_what_the_whole_sequence_computes():
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(block_with("stream(lstm)"), namespace)  # noqa: S102
    assert float(printed.getvalue()) < 1e-6  # the README says ~3e-8
    assert namespace["outputs"].shape == (50, 16)


# ----------------------------------------------------------------------------------------------------------
# Cited test commands select tests that exist
# ----------------------------------------------------------------------------------------------------------


def cited_test_commands() -> list[tuple[str, str, list[str]]]:
    """(document, command, pytest arguments) for every ``python -m pytest ...`` in backticks."""
    commands = []
    for name, text in DOCUMENTS.items():
        for command in re.findall(r"`([^`]*-m pytest [^`]*)`", text):
            arguments = shlex.split(command.split("-m pytest", 1)[1])
            commands.append((name, command, arguments))
    return commands


def functions_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test")]


def test_every_cited_test_command_selects_tests():
    commands = cited_test_commands()
    assert len(commands) >= 12
    for document, command, arguments in commands:
        paths, keyword, marker, skip = [], None, None, False
        for index, argument in enumerate(arguments):
            if skip:
                skip = False
            elif argument == "-k":
                keyword, skip = arguments[index + 1], True
            elif argument == "-m":
                marker, skip = arguments[index + 1], True
            elif not argument.startswith("-"):
                paths.append(argument)
        assert paths, f"{document}: `{command}` names no test file"
        selected = []
        for given in paths:
            file, _, function = given.partition("::")
            path = ROOT / file
            assert path.is_file(), f"{document}: `{command}` names {file}, which does not exist"
            names = functions_of(path)
            if function:
                assert function in names, f"{document}: `{command}`: {file} has no {function}"
                names = [function]
            if keyword:
                expression = Expression.compile(keyword)
                names = [n for n in names if expression.evaluate(lambda word, n=n: word.lower() in n.lower())]
            selected += names
        assert selected, f"{document}: `{command}` selects no test"
        if marker == "slow":
            text = "".join((ROOT / p.partition("::")[0]).read_text() for p in paths)
            assert "mark.slow" in text, f"{document}: `{command}` selects slow tests but none is marked slow"


# ----------------------------------------------------------------------------------------------------------
# Named files exist
# ----------------------------------------------------------------------------------------------------------


def test_every_file_the_readme_names_exists():
    layout = re.search(r"## Layout\n\n```\n(.*?)```", README, flags=re.S).group(1)
    named = [word.strip("():,") for line in layout.splitlines() for word in line.split()[:1] if "/" in word]
    named += [m for m in re.findall(r"`((?:rnnkit|tests|benchmarks|scripts|docs)/[\w./-]+)`", README)]
    named += re.findall(r"\(((?:docs)/[\w./-]+\.png)\)", README)  # the figures shown
    missing = [name for name in dict.fromkeys(named) if not (ROOT / name).exists()]
    assert len(named) > 30 and missing == []


def test_installs_go_through_the_torch_pin():
    """"Requirements: Python >= 3.11. Every install goes through constraints.txt, which pins torch==2.13.0 ...
    add [server] for rnnkit serve, [export] for ONNX export"."""
    pins = (ROOT / "constraints.txt").read_text().split()
    assert "torch==2.13.0" in pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    extras = project["optional-dependencies"]
    assert {"fastapi", "uvicorn"} <= {re.split(r"[<>=]", r)[0] for r in extras["server"]}
    assert {"onnx", "onnxruntime"} <= {re.split(r"[<>=]", r)[0] for r in extras["export"]}
    installs = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs)
    assert "scripts/install_browser.sh" in (ROOT / "Makefile").read_text()  # `make test` installs chromium


def test_the_vendored_plot_library_ships_with_its_licence():
    vendor = ROOT / "rnnkit" / "server" / "static" / "vendor"
    assert (vendor / "plotly-cartesian.min.js").is_file()
    assert "MIT" in (vendor / "plotly.LICENSE").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# The command-line synopsis
# ----------------------------------------------------------------------------------------------------------


def help_text(arguments: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main([*arguments, "--help"])
    return out.getvalue()


def nproc_error() -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["train", "translate", "--nproc", "0"]) != 0
    return err.getvalue()  # "--nproc takes a number of processes >= 1, got '0'"


def test_the_command_line_synopsis_matches_the_parser():
    synopsis = re.search(r"## The command line\n\n```\n(.*?)```", README, flags=re.S).group(1)
    commands = 0
    for line in synopsis.splitlines():
        words = line.split("#")[0].split()
        if not words or words[0] != "rnnkit":
            continue
        command = words[1]
        arguments = [command, "translate"] if command == "train" else [command]  # train's settings are per task
        shown = help_text(arguments)
        if command == "train":  # --nproc is taken before the task's parser (which is what --help shows)
            shown += nproc_error()
        for flag in re.findall(r"--[a-z][a-z-]*", line.split("#")[0]):
            assert flag in shown, f"`{line.strip()}`: rnnkit {' '.join(arguments)} has no {flag}"
        commands += 1
    assert commands >= 13
    top = help_text([])
    for name in re.findall(r"^rnnkit (\w+)", synopsis, flags=re.M):
        assert name in top, name
    assert "layers" in help_text(["bench"]) and "fetch" in help_text(["data"])


def test_exported_layers_are_one_onnx_recurrent_operator_each_with_sequence_lengths(tmp_path):
    """"Each rnnkit layer becomes one ONNX LSTM/GRU/RNN operator with sequence_lens"."""
    onnx = pytest.importorskip("onnx")
    from rnnkit.export import export_onnx
    from rnnkit.models import SequenceClassifier, SequenceClassifierConfig

    for cell, op in (("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "RNN")):
        model = SequenceClassifier(SequenceClassifierConfig(vocab_size=20, num_classes=3, hidden_size=6,
                                                            embedding_size=5, cell=cell, num_layers=2,
                                                            bidirectional=True)).eval()
        graph = onnx.load(str(export_onnx(model, tmp_path / f"{cell}.onnx"))).graph
        recurrent = [node for node in graph.node if node.op_type in ("LSTM", "GRU", "RNN")]
        assert [node.op_type for node in recurrent] == [op, op]  # one operator per layer of the stack
        for node in recurrent:
            assert len(node.input) > 4 and node.input[4]  # input 4 is sequence_lens
            assert {a.name: a.s for a in node.attribute}["direction"] == b"bidirectional"
