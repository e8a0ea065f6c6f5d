"""rnnkit.data.tokenized: per-side tokenizers built once, token ids memory-mapped in the run directory, reused;
and the streaming reader it stands on, checked against read_parallel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnkit.data import (
    BOS_ID,
    EOS_ID,
    BPETokenizer,
    DataError,
    RaggedArray,
    Vocab,
    read_parallel,
    stream_parallel,
    tokenize_corpus,
)
from rnnkit.data import tokenized as tokenized_module
from rnnkit.tasks import resolve_settings, task_module
from rnnkit.tasks.translate import make_batch

G2P = [("cat", "K AE T"), ("dog", "D AO G"), ("through", "TH R UW"), ("fish", "F IH SH"), ("act", "AE K T")]


def write_pairs(path, pairs, newline="\n"):
    path.write_text("".join(f"{s}\t{t}{newline}" for s, t in pairs), encoding="utf-8", newline="")
    return path


def test_stream_parallel_reads_what_read_parallel_reads(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes("\ufeffa b\tx y\r\n\n  c \t z\nd\te".encode())  # BOM, CRLF, blank line, no final newline
    assert list(stream_parallel(path)) == list(read_parallel(path))
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"a\tb\nc d\n")
    with pytest.raises(DataError) as streamed:
        list(stream_parallel(bad))
    with pytest.raises(DataError) as whole:
        read_parallel(bad)
    assert str(streamed.value) == str(whole.value) and "line 2" in str(streamed.value)
    bad.write_bytes(b"a\tb\n\xff\tc\n")
    with pytest.raises(DataError, match=r"line 2: invalid UTF-8 at byte offset 4"):
        list(stream_parallel(bad))
    (tmp_path / "empty.tsv").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        list(stream_parallel(tmp_path / "empty.tsv"))
    (tmp_path / "blank.tsv").write_bytes(b"\n\n")
    with pytest.raises(DataError, match="no sentence pairs"):
        list(stream_parallel(tmp_path / "blank.tsv"))
    with pytest.raises(DataError, match="file not found"):
        list(stream_parallel(tmp_path / "missing.tsv"))


def test_per_side_levels_ids_and_texts(tmp_path):
    train = write_pairs(tmp_path / "train.tsv", G2P * 2)
    valid = write_pairs(tmp_path / "valid.tsv", [("tact", "T AE K T"), ("zq", "Z K")])
    corpus = tokenize_corpus(tmp_path / "run", train, valid, source_level="char", target_level="word")
    source, target = corpus.source_tokenizer, corpus.target_tokenizer
    assert source == Vocab.build([s for s, _ in G2P], level="char")
    assert target == Vocab.build([t for _, t in G2P], level="word")
    assert source.level == "char" and target.level == "word" and "TH" in target and "h" in source
    assert len(corpus.train) == 10 and len(corpus.valid) == 2
    assert corpus.train.sources[2].tolist() == source.encode("through")
    assert corpus.train.targets[2].tolist() == [BOS_ID, *target.encode("TH R UW"), EOS_ID]
    assert corpus.valid.sources[1].tolist() == [source.token_to_id("z"), source.unk_id]  # "q" was never seen
    assert corpus.valid.target_text[:] == ["T AE K T", "Z K"] and corpus.train.source_text[-1] == "act"
    assert corpus.train.lengths().tolist() == [len(s) + len(t.split()) + 2 for s, t in G2P * 2]
    assert isinstance(corpus.train.sources.values, np.memmap) and corpus.train.sources.values.dtype == np.uint16
    # what the runner loads is what was encoded with
    assert (tmp_path / "run" / "source_vocab.json").is_file() and (tmp_path / "run" / "target_vocab.json").is_file()


def test_bpe_side_and_limit(tmp_path):
    sentences = [("the cat sat on the mat", "le chat"), ("the dog sat", "le chien")] * 30
    train = write_pairs(tmp_path / "train.tsv", sentences)
    corpus = tokenize_corpus(tmp_path / "run", train, train, source_level="bpe", target_level="word",
                             bpe_vocab_size=40, limit=7)
    assert isinstance(corpus.source_tokenizer, BPETokenizer) and len(corpus.source_tokenizer) <= 40
    assert len(corpus.train) == 7 and len(corpus.valid) == 60
    assert corpus.source_tokenizer.decode(corpus.train.sources[1]) == "the dog sat"


def test_a_second_prepare_reuses_tokenizers_and_arrays_until_an_input_changes(tmp_path, monkeypatch):
    train = write_pairs(tmp_path / "train.tsv", G2P)
    run = tmp_path / "run"
    first = tokenize_corpus(run, train, train, source_level="char", target_level="word")
    built = []
    real = tokenized_module.build_tokenizer
    monkeypatch.setattr(tokenized_module, "build_tokenizer", lambda *a, **k: built.append(a[0]) or real(*a, **k))
    again = tokenize_corpus(run, train, train, source_level="char", target_level="word")
    assert built == [] and [t.tolist() for t in again.train.targets] == [t.tolist() for t in first.train.targets]
    tokenize_corpus(run, train, train, source_level="char", target_level="char")  # another setting: rebuilt
    assert built == ["char", "char"]
    write_pairs(train, [*G2P, ("cab", "K AE B")])  # new contents: rebuilt
    changed = tokenize_corpus(run, train, train, source_level="char", target_level="char")
    assert len(changed.train) == 6 and len(built) == 4
    (run / "target_vocab.json").write_text("{}", encoding="utf-8")  # a damaged tokenizer is not trusted
    tokenize_corpus(run, train, train, source_level="char", target_level="char")
    assert len(built) == 6
    manifest = json.loads((run / "data" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["train"]["sha256"] and manifest["target_level"] == "char"


def test_bad_level_is_refused(tmp_path):
    train = write_pairs(tmp_path / "train.tsv", G2P)
    with pytest.raises(ValueError, match="target_level must be one of char, word, bpe, got 'phoneme'"):
        tokenize_corpus(tmp_path / "run", train, train, source_level="char", target_level="phoneme")


def test_ragged_array_indexing():
    rows = RaggedArray(np.array([5, 6, 7, 8], dtype=np.uint16), np.array([0, 1, 1, 4]))
    assert len(rows) == 3 and rows[0].tolist() == [5] and rows[1].tolist() == [] and rows[-1].tolist() == [6, 7, 8]
    assert rows[2].dtype == np.int64 and [r.tolist() for r in rows[1:]] == [[], [6, 7, 8]]
    with pytest.raises(IndexError):
        rows[3]
    with pytest.raises(ValueError, match="offsets must run from 0 to len"):
        RaggedArray(np.zeros(3), np.array([0, 2]))


def test_translate_with_char_source_and_word_target_reports_wer_and_per(tmp_path):
    train = write_pairs(tmp_path / "train.tsv", G2P * 4)
    settings = resolve_settings("translate", {"data": str(train), "valid": str(train), "source_level": "char",
                                              "target_level": "word", "hidden_size": 8, "embedding_size": 4})
    task, run_config = task_module("translate").prepare(settings, tmp_path / "run")
    assert task.source_vocab.level == "char" and task.target_vocab.level == "word"
    assert run_config["model"]["target_vocab_size"] == 4 + len({p for _, t in G2P for p in t.split()})
    with torch.no_grad():
        metrics = task.evaluate("valid")
    assert {"wer", "per", "exact_match"} <= set(metrics)
    assert metrics["wer"] == pytest.approx(1 - metrics["exact_match"])
    assert 0 <= metrics["per"] and "wer_any" not in metrics  # a file lists one reference per source
    # the validation loss is the mean over every target token, however the pairs are batched
    with torch.no_grad():
        sums = [task.batch_loss(make_batch(task.valid, [i]), label_smoothing=0.0) for i in range(len(task.valid))]
    assert metrics["loss"] == pytest.approx(sum(float(loss) * n for loss, n in sums) / sum(n for _, n in sums))
    plain = resolve_settings("translate", {"data": str(train), "valid": str(train), "hidden_size": 8})
    char_task, _ = task_module("translate").prepare(plain, tmp_path / "plain")
    with torch.no_grad():
        assert char_task.target_vocab.level == "char" and "wer" not in char_task.evaluate("valid")


def test_validation_counts_a_word_right_against_any_listed_reference(tmp_path, monkeypatch):
    """With further references for the validation words (CMUdict's other pronunciations), each evaluation reports
    wer_any/per_any as the final test does, so that a run can pick its best weights by the figure it reports.
    Here every word's further reference is the untrained model's own output: wer_any must be 0 while wer is not."""
    import rnnkit.tasks.translate as translate

    train = write_pairs(tmp_path / "train.tsv", G2P * 4)
    settings = resolve_settings("translate", {"data": str(train), "valid": str(train), "source_level": "char",
                                              "target_level": "word", "hidden_size": 8, "embedding_size": 4,
                                              "eval_examples": 0})
    task, _ = task_module("translate").prepare(settings, tmp_path / "run")
    with torch.no_grad():
        task.evaluate("valid")
    outputs = {sample["source"]: sample["hypothesis"] for sample in task.samples(len(G2P) * 4)}
    monkeypatch.setattr(translate, "further_references", lambda source, **_: {w: (t,) for w, t in outputs.items()})
    task, _ = task_module("translate").prepare(settings, tmp_path / "run")
    assert task.metrics[-2:] == ("wer_any", "per_any")
    with torch.no_grad():
        metrics = task.evaluate("valid")
    assert metrics["wer"] > 0.5 and metrics["wer_any"] == 0.0 and metrics["per_any"] == 0.0
