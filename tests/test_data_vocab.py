"""Vocab, LabelSet and BPETokenizer: ids, determinism, JSON save/load and its validation."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rnnkit.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    BPETokenizer,
    DataError,
    LabelSet,
    Vocab,
    generate_dates,
    load_tokenizer,
)

CORPUS = ["the cat sat on the mat", "the dog sat", "a cat and a dog"]


def test_specials_have_fixed_ids():
    assert SPECIAL_TOKENS == ("<pad>", "<unk>", "<bos>", "<eos>")
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    vocab = Vocab.build(CORPUS)
    assert [vocab.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)


def test_word_vocab_orders_by_count_then_token():
    vocab = Vocab.build(CORPUS)
    counts = Counter(w for line in CORPUS for w in line.split())
    expected = sorted(counts, key=lambda w: (-counts[w], w))  # the ordering rule, computed independently
    assert vocab.itos[4:] == expected
    assert vocab.itos[4] == "the"  # 3 occurrences
    assert vocab.itos[5:9] == ["a", "cat", "dog", "sat"]  # 2 occurrences each, alphabetical


def test_build_is_independent_of_input_order():
    assert Vocab.build(CORPUS) == Vocab.build(list(reversed(CORPUS)))


def test_min_freq_and_max_size():
    vocab = Vocab.build(CORPUS, min_freq=2)
    assert vocab.itos[4:] == ["the", "a", "cat", "dog", "sat"]
    small = Vocab.build(CORPUS, max_size=6)
    assert len(small) == 6 and small.itos[4:] == ["the", "a"]
    with pytest.raises(ValueError, match="max_size"):
        Vocab.build(CORPUS, max_size=3)


def test_encode_decode_word_level():
    vocab = Vocab.build(CORPUS)
    ids = vocab.encode("the bird sat", add_bos=True, add_eos=True)
    assert ids == [BOS_ID, vocab.stoi["the"], UNK_ID, vocab.stoi["sat"], EOS_ID]
    assert vocab.decode(ids) == "the <unk> sat"
    assert vocab.decode(ids, skip_specials=False) == "<bos> the <unk> sat <eos>"
    assert vocab.encode(["cat", "zebra"]) == [vocab.stoi["cat"], UNK_ID]


def test_special_tokens_in_text_map_to_their_ids():
    vocab = Vocab.build(["a <unk> b", "<unk> <eos>"])  # PTB writes <unk> literally
    assert "<unk>" not in vocab.itos[4:]
    assert vocab.encode("a <unk> <eos>") == [vocab.stoi["a"], UNK_ID, EOS_ID]


def test_char_level():
    vocab = Vocab.build(["abba\n", "cab"], level="char")
    assert vocab.itos[4:] == ["a", "b", "\n", "c"]  # a:3 b:3 then \n:1 c:1 by code point
    text = "bac\n"
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.encode("z") == [UNK_ID]


def test_vocab_json_round_trip(tmp_path):
    vocab = Vocab.build(["héllo wörld", "wörld"])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded == vocab and loaded.level == "word"
    assert load_tokenizer(path) == vocab
    assert Vocab.from_json(vocab.to_json()) == vocab


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "invalid JSON"),
        ('{"format": "something.else", "version": 1}', "expected \"format\": \"rnnkit.vocab\""),
        ('[1, 2, 3]', "found 'list'"),
        ('{"format": "rnnkit.vocab", "version": 99, "level": "word", "specials": [], "tokens": []}',
         "unsupported rnnkit.vocab version 99"),
        ('{"format": "rnnkit.vocab", "version": 1, "level": "word", "specials": ["<unk>", "<pad>", "<bos>", '
         '"<eos>"], "tokens": []}', "'specials' must be"),
        ('{"format": "rnnkit.vocab", "version": 1, "level": "byte", "specials": ["<pad>", "<unk>", "<bos>", '
         '"<eos>"], "tokens": []}', "'level' must be"),
        ('{"format": "rnnkit.vocab", "version": 1, "level": "word", "specials": ["<pad>", "<unk>", "<bos>", '
         '"<eos>"], "tokens": ["a", "a"]}', "unique"),
        ('{"format": "rnnkit.vocab", "version": 1, "level": "word", "specials": ["<pad>", "<unk>", "<bos>", '
         '"<eos>"], "tokens": [1]}', "list of strings"),
    ],
)
def test_corrupt_or_foreign_vocab_json_names_the_file(tmp_path, content, fragment):
    path = tmp_path / "broken.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        Vocab.load(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_label_set():
    labels = LabelSet.build(["pos", "neg", "pos", "neutral"])
    assert labels.labels == ["neg", "neutral", "pos"]
    assert labels.encode("pos") == 2 and labels.decode(0) == "neg"
    with pytest.raises(ValueError, match="unknown label 'meh'"):
        labels.encode("meh")
    tags = LabelSet.build([["B-PER", "O"], ["O", "B-LOC"]])
    assert tags.labels == ["B-LOC", "B-PER", "O"]


def test_label_set_json(tmp_path):
    labels = LabelSet(["b", "a"])
    path = tmp_path / "labels.json"
    labels.save(path)
    assert LabelSet.load(path) == labels
    path.write_text(json.dumps({"format": "rnnkit.vocab", "version": 1}), encoding="utf-8")
    with pytest.raises(DataError, match="labels.json"):
        LabelSet.load(path)


# ----------------------------------------------------------------------------------------------------------
# BPE
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def date_sources() -> list[str]:
    return [p.source for p in generate_dates("train", n=600)]


def test_bpe_special_ids_and_round_trip(date_sources):
    bpe = BPETokenizer.train(date_sources, vocab_size=300)
    assert [bpe.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert len(bpe) <= 300
    for text in date_sources[:50]:
        ids = bpe.encode(text, add_bos=True, add_eos=True)
        assert ids[0] == BOS_ID and ids[-1] == EOS_ID and UNK_ID not in ids
        assert bpe.decode(ids) == text
    # merges make the encoding shorter than the characters
    assert sum(len(bpe.encode(t)) for t in date_sources) < 0.6 * sum(len(t) for t in date_sources)


def test_bpe_is_deterministic_and_saves_as_json(tmp_path, date_sources):
    first = BPETokenizer.train(date_sources, vocab_size=200)
    second = BPETokenizer.train(date_sources, vocab_size=200)
    assert first.to_json() == second.to_json()
    path = tmp_path / "bpe.json"
    first.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded == first
    assert isinstance(load_tokenizer(path), BPETokenizer)
    text = date_sources[0]
    assert loaded.encode(text) == first.encode(text)


def test_bpe_rejects_foreign_json(tmp_path):
    path = tmp_path / "bpe.json"
    path.write_text('{"format": "rnnkit.bpe", "version": 1, "tokenizer": {"model": 3}}', encoding="utf-8")
    with pytest.raises(DataError, match="bad BPE tokenizer") as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value)
    vocab_path = tmp_path / "vocab.json"
    Vocab.build(["a b"]).save(vocab_path)
    with pytest.raises(DataError, match="rnnkit.bpe"):
        BPETokenizer.load(vocab_path)


@pytest.mark.parametrize("loader", [Vocab.load, LabelSet.load, load_tokenizer])
def test_hostile_json_files_are_data_errors(tmp_path, loader):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)  # json.loads raises RecursionError on this, not JSONDecodeError
    with pytest.raises(DataError, match="invalid JSON: nested too deeply") as info:
        loader(deep)
    assert str(deep) in str(info.value)
    with pytest.raises(DataError, match="is a directory"):
        loader(tmp_path)
