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
    for command in ("demo", "train", "eval", "average", "generate", "translate", "predict", "experiment", "data",
                    "bench", "export", "serve"):
        assert command in out


def test_train_task_help_shows_settings(capsys):
    with pytest.raises(SystemExit):
        main(["train", "translate", "--help"])
    out = capsys.readouterr().out
    assert "--hidden-size" in out and "--time-budget" in out and "--teacher-forcing" in out
    assert "--nproc N" in out  # data-parallel training: taken before the other flags, listed all the same


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


# -- issue 18: a run trained on files is scored on the files it was given -----------------------------------

def _split_files(root, task: str) -> dict[str, str]:
    """Train / valid / test files for ``task`` whose parts differ in size and content, so that scoring the
    wrong part gives other figures."""
    parts = {}
    if task == "lm":
        texts = {"train": "the cat sat on the mat.\n" * 30, "valid": "the dog sat on the log.\n" * 3,
                 "test": "a mat sat on the cat.\n" * 5}
        suffix = "txt"
    elif task == "classify":
        texts = {"train": "pos\tgood fun\nneg\tbad dull\npos\tgreat film\n" * 8, "valid": "pos\tgood\nneg\tdull\n",
                 "test": "neg\tdull fun\nneg\tbad film\nneg\tawful\npos\tgreat fun\nneg\tgood bad\n"}
        suffix = "tsv"
    elif task == "tag":
        texts = {"train": "the\tDET\ndog\tNOUN\nruns\tVERB\n\na\tDET\ncat\tNOUN\n\n" * 6,
                 "valid": "a\tDET\ndog\tNOUN\n\n", "test": "the\tDET\ncat\tNOUN\nruns\tVERB\n\ndog\tNOUN\n\n" * 2}
        suffix = "tsv"
    elif task == "translate":
        texts = {"train": "ab\tba\nabc\tcba\nbca\tacb\n" * 5, "valid": "ba\tab\ncab\tbac\n",
                 "test": "aab\tbaa\nc\tc\ncb\tbc\n"}
        suffix = "tsv"
    else:
        values = {"train": [10 + (t % 7) for t in range(60)], "valid": [12 + (t % 7) for t in range(15)],
                  "test": [9 + 2 * (t % 5) for t in range(18)]}
        texts = {k: "value\n" + "".join(f"{v}\n" for v in vs) for k, vs in values.items()}
        suffix = "csv"
    for split, text in texts.items():
        path = root / f"{split}.{suffix}"
        path.write_text(text, encoding="utf-8")
        parts[split] = str(path)
    return parts


_TINY_MODEL = {"lm": ["--bptt", "5", "--batch-size", "2"], "forecast": ["--input-len", "4"],
               "classify": ["--min-freq", "1"], "tag": ["--min-freq", "1"], "translate": []}


def _train_on_files(task, files, run, capsys, test=True):
    args = ["train", task, "--data", files["train"], "--valid", files["valid"], "--out", str(run), "--max-steps", "3",
            "--hidden-size", "8", "--no-progress", *_TINY_MODEL[task]]
    if test:
        args += ["--test", files["test"]]
    assert main(args) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _printed_metrics(capsys) -> dict:
    printed = json.loads(capsys.readouterr().out)
    return {k: v for k, v in printed.items() if k not in ("source", "split")}


@pytest.mark.parametrize("task", ["lm", "classify", "tag", "translate", "forecast"])
def test_a_file_run_is_scored_on_its_own_test_and_validation_files(tmp_path, capsys, task):
    from rnnkit.tasks import task_module

    files = _split_files(tmp_path, task)
    run = tmp_path / "run"
    summary = _train_on_files(task, files, run, capsys)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["train"] == files["train"]
    assert config["data"]["valid"] == files["valid"] and config["data"]["test"] == files["test"]

    runner = task_module(task).load(run)
    if task == "forecast":  # a series is cut in time order: its parts are scored in place
        expected = {split: runner.evaluate(split=split) for split in ("train", "valid", "test")}
    else:
        expected = {split: runner.evaluate(files[split]) for split in ("train", "valid", "test")}
    assert expected["test"] != expected["train"] and expected["test"] != expected["valid"]

    assert main(["eval", str(run)]) == 0
    assert _printed_metrics(capsys) == expected["test"]
    for split in ("valid", "train"):
        assert main(["eval", str(run), "--split", split]) == 0
        assert _printed_metrics(capsys) == expected[split]
    # Training with a test source ends with the test figures, in the output and in the report.
    assert summary["test_metrics"] == expected["test"]
    report = (run / "report.html").read_text(encoding="utf-8")
    assert "held-out test" in report and files["test"] in report


def test_a_file_run_without_test_file_says_how_to_give_one(tmp_path, capsys):
    files = _split_files(tmp_path, "classify")
    run = tmp_path / "run"
    summary = _train_on_files("classify", files, run, capsys, test=False)
    assert json.loads((run / "config.json").read_text())["data"]["test"] is None
    assert summary["test_metrics"] is None
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no test" in err and "--data" in err
    # --split names a part of a catalog dataset or of the run's own sources; a file given with --data is
    # scored whole, so a --split beside it is refused rather than ignored.
    assert main(["eval", str(run), "--data", files["test"], "--split", "valid"]) == 2
    assert "--split" in capsys.readouterr().err
    assert main(["eval", str(run), "--data", files["test"]]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["examples"] == 5 and printed["source"] == files["test"]


def test_translate_uses_the_runs_own_beam_size(tmp_path, capsys, monkeypatch):
    """`rnnkit translate` without --beam decodes with the run's beam_size, not a fixed 5."""
    run = tmp_path / "run"
    assert main(["train", "translate", "--data", TINY, "--out", str(run), "--hidden-size", "8", "--embedding-size",
                 "4", "--max-steps", "2", "--beam-size", "2", "--no-progress"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("5 mars 2024\n"))
    assert main(["translate", str(run), "--n-best", "3"]) == 2  # the run's beam holds 2 hypotheses
    assert "beam_size=2" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("5 mars 2024\n"))
    assert main(["translate", str(run), "--n-best", "2"]) == 0
    from rnnkit.tasks import translate

    expected = translate.load(run).translate(["5 mars 2024"], beam_size=2, n_best=2)[0]
    printed = capsys.readouterr().out.rstrip("\n").split("\t")
    assert printed[::2] == [o["text"] for o in expected]


# -- issue 21: training a translator the way peers do, from the command line ---------------------------------

def test_translation_training_flags_and_checkpoint_averaging(tmp_path, capsys):
    """Token batches, gradient accumulation, inverse-sqrt warm-up, selection by BLEU, kept checkpoints and
    samples in the log, all as flags; `rnnkit average` writes a run whose weights are the checkpoints' mean."""
    import torch

    from rnnkit.checkpoint import kept_checkpoints, load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "translate", "--data", TINY, "--out", str(run), "--hidden-size", "8", "--embedding-size",
                 "4", "--max-steps", "6", "--eval-every", "3", "--checkpoint-every", "2", "--keep-last", "2",
                 "--keep-best", "2", "--batch-tokens", "300", "--accumulate", "2", "--decay", "inverse-sqrt",
                 "--warmup-steps", "2", "--select-metric", "bleu", "--log-samples", "2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and "best_bleu" in summary
    assert summary["test_metrics"]["examples"] == 40  # the catalog dataset's own test split
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and {e["primary_metric"] for e in evals} == {"bleu"}
    assert all(len(e["samples"]) == 2 and set(e["samples"][0]) == {"source", "reference", "hypothesis"}
               for e in evals)
    assert [e["event"] for e in events][-1] == "test"
    best = [name for _, name in kept_checkpoints(run, "best-")]
    assert len(best) == min(2, len(evals)) and {int(n[5:]) for n in best} <= {e["step"] for e in evals}
    last = [name for _, name in kept_checkpoints(run, "step-")]
    assert len(last) == 2 and last[0] == "step-6"  # checkpoints every 2 steps (and at epoch ends): the 2 latest

    assert main(["average", str(run), "--last", "2", "--out", str(tmp_path / "avg")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["averaged"] == last
    assert set(printed["valid"]) >= {"bleu", "chrf", "examples"} and printed["valid_best"]["examples"] == 40
    averaged = load_checkpoint(tmp_path / "avg", "best").weights
    first, second = (load_checkpoint(run, name).weights for name in last)
    for name, value in averaged.items():
        torch.testing.assert_close(value, (first[name] + second[name]) / 2, rtol=0, atol=1e-6)
    assert main(["eval", str(tmp_path / "avg")]) == 0  # the averaged run loads and scores like the run
    assert json.loads(capsys.readouterr().out)["examples"] == 40
    assert main(["average", str(run), "--last", "3"]) == 2
    assert "keeps 2 such checkpoints" in capsys.readouterr().err
