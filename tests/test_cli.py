"""The `rnnkit` command: help, settings validation, and a tiny train -> translate -> eval round trip."""

import io
import json

import pytest

from rnnkit.cli import main

TINY = "dates:n_train=300,n_valid=40,n_test=40"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "train", "eval", "generate", "translate", "predict", "experiment", "data", "bench",
                    "export", "serve"):
        assert command in out


def test_train_task_help_shows_settings(capsys):
    with pytest.raises(SystemExit):
        main(["train", "translate", "--help"])
    out = capsys.readouterr().out
    assert "--hidden-size" in out and "--time-budget" in out and "--teacher-forcing" in out


def test_unknown_task_and_flag_are_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "poetry", "--data", "x"])
    assert exit_info.value.code == 2
    assert "poetry" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "translate", "--data", TINY, "--bogus", "3"])
    assert exit_info.value.code == 2
    assert "--bogus" in capsys.readouterr().err


def test_config_file_unknown_key_and_bad_value_named(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('hidden_size = 16\nhiden_size = 3\n')
    assert main(["train", "translate", "--data", TINY, "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "hiden_size" in capsys.readouterr().err
    config.write_text('hidden_size = "big"\n')
    assert main(["train", "translate", "--data", TINY, "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "hidden_size" in err and "int" in err


def test_train_translate_eval_round_trip(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text("hidden_size = 16\nembedding_size = 8\nbatch_size = 32\n")
    code = main(["train", "translate", "--data", TINY, "--out", str(run), "--config", str(config),
                 "--max-steps", "6", "--eval-every", "3", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and summary["stop_reason"] == "max_steps"
    saved = json.loads((run / "config.json").read_text())
    assert saved["task"] == "translate" and saved["settings"]["hidden_size"] == 16

    monkeypatch.setattr("sys.stdin", io.StringIO("5 mars 2024\n\nJan 3, 1999\n"))
    assert main(["translate", str(run), "--beam", "3", "--n-best", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 4 for line in lines)

    assert main(["eval", str(run), "--split", "valid"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 40 and 0.0 <= metrics["exact_match"] <= 1.0

    # A second `train` into the same directory refuses to overwrite; --resume continues it.
    assert main(["train", "translate", "--data", TINY, "--out", str(run), "--max-steps", "6"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["train", "translate", "--resume", str(run), "--max-steps", "8", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 8


def test_wrong_verb_for_run_is_clear(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_export_writes_onnx_parts_of_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "translate", "--data", TINY, "--out", str(run), "--hidden-size", "8",
                 "--embedding-size", "4", "--max-steps", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    written = capsys.readouterr().out.split()
    assert {p.rsplit("/", 1)[-1] for p in written} == {"encoder.onnx", "decoder-step.onnx"}
    assert all((tmp_path / "onnx" / name).stat().st_size > 1000 for name in ("encoder.onnx", "decoder-step.onnx"))


def test_serve_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_nproc_needs_a_positive_count(capsys):
    assert main(["train", "translate", "--data", TINY, "--nproc", "zero"]) == 2
    assert "--nproc" in capsys.readouterr().err


def test_nproc_2_trains_through_torchrun(tmp_path):
    """--nproc 2 runs the same command in two processes (torchrun, gloo); rank 0 writes the run."""
    import subprocess
    import sys

    run = tmp_path / "run"
    command = [sys.executable, "-m", "rnnkit.cli", "train", "translate", "--data", TINY, "--out", str(run),
               "--hidden-size", "8", "--embedding-size", "4", "--max-steps", "2", "--no-progress", "--nproc", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["steps"] == 2
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
