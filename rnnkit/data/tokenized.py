"""Parallel corpora at scale: one tokenizer per side, built once, and token ids memory-mapped from the run directory.

Held as Python lists, a million tokenized sentence pairs take gigabytes (every list, and every id above 256, is an
object of its own). Here the training file is streamed line by line, never held whole: once per side to build that
side's tokenizer (each side has its own level, so ``source_level="char", target_level="word"`` reads letters and
writes phoneme symbols), then once to write every pair's ids into flat arrays on disk::

    RUN_DIR/source_vocab.json, target_vocab.json    the tokenizers (what `rnnkit translate` loads)
    RUN_DIR/data/manifest.json                      what the arrays were built from
    RUN_DIR/data/{train,valid}/source.ids           all source ids, pair after pair (uint16, or int32 if needed)
    RUN_DIR/data/{train,valid}/source.offsets.npy   (N + 1,) int64: pair i is ids[offsets[i]:offsets[i + 1]]
    ... target.ids (each pair as <bos> y_1 .. y_n <eos>), and source.text / target.text (UTF-8) likewise

Batches read the pairs they need from the memory map (:class:`RaggedArray`), so the memory a run needs does not
grow with the corpus. A later :func:`tokenize_corpus` on the same run directory with the same inputs (same file
contents by SHA-256, same levels and sizes) reuses tokenizers and arrays: ``--resume`` does not tokenize again.

Example::

    corpus = tokenize_corpus("runs/g2p", "train.tsv", "valid.tsv", source_level="char", target_level="word")
    corpus.train.sources[0]            # array of the first source's ids
    corpus.train.target_text[0]        # its target line, read back from disk
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.data.bpe import BPETokenizer
from rnnkit.data.errors import DataError
from rnnkit.data.packages import sha256_of
from rnnkit.data.readers import SentencePair, stream_parallel
from rnnkit.data.tokenizer import Tokenizer, load_tokenizer
from rnnkit.data.vocab import Vocab

TOKEN_LEVELS = ("char", "word", "bpe")
SOURCE_VOCAB_FILE, TARGET_VOCAB_FILE = "source_vocab.json", "target_vocab.json"
DATA_FOLDER = "data"
MANIFEST_FORMAT = "rnnkit.tokenized-corpus"
FORMAT_VERSION = 1
CHUNK_PAIRS = 10_000  # pairs encoded and written at a time


def build_tokenizer(level: str, texts: Iterable[str], bpe_vocab_size: int = 8000) -> Tokenizer:
    """A tokenizer of one side learnt from its training ``texts`` (any iterable, read once).

    ``char``: every character a token; ``word``: whitespace-separated tokens (words, or phoneme symbols such as
    CMUdict's ``K AE T``); ``bpe``: subwords (:class:`~rnnkit.data.bpe.BPETokenizer`) of ``bpe_vocab_size``.
    """
    if level not in TOKEN_LEVELS:
        raise ValueError(f"level must be one of {', '.join(TOKEN_LEVELS)}, got {level!r}")
    if level == "bpe":
        return BPETokenizer.train(texts, vocab_size=bpe_vocab_size)
    return Vocab.build(texts, level=level)


class RaggedArray(Sequence):
    """N variable-length rows stored flat: row i is ``values[offsets[i]:offsets[i + 1]]``, as int64 arrays.

    ``values`` may be a ``numpy.memmap``: indexing reads only the rows asked for. A slice gives a list of rows.
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(values):
            raise ValueError(f"offsets must run from 0 to len(values)={len(values)}, got {offsets[:1]} .. "
                             f"{offsets[-1:]}")
        self.values, self.offsets = values, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index]:self.offsets[index + 1]]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        return self.row(index % len(self)).astype(np.int64)

    def lengths(self) -> np.ndarray:
        """(N,) int64: the length of every row."""
        return np.diff(self.offsets)


class TextColumn(RaggedArray):
    """Lines of text stored as UTF-8 bytes in a :class:`RaggedArray`; indexing decodes a line."""

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"line {index} of {len(self)}")
        return self.row(index % len(self)).tobytes().decode("utf-8")


@dataclass
class TokenizedPairs:
    """Encoded sentence pairs: ``sources[i]`` (ids), ``targets[i]`` (``<bos>`` ids ``<eos>``), and the text of both
    sides (``source_text[i]``, ``target_text[i]``), each row read from disk when asked for."""

    sources: RaggedArray
    targets: RaggedArray
    source_text: TextColumn
    target_text: TextColumn

    def __len__(self) -> int:
        return len(self.sources)

    def lengths(self) -> np.ndarray:
        """(N,) source + target length of each pair, for length bucketing."""
        return self.sources.lengths() + self.targets.lengths()


@dataclass
class TokenizedCorpus:
    """What :func:`tokenize_corpus` returns: the two tokenizers and the encoded train and valid pairs."""

    source_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    train: TokenizedPairs
    valid: TokenizedPairs


def _pairs(path: Path, limit: int) -> Iterator[SentencePair]:
    pairs = stream_parallel(path)
    return islice(pairs, limit) if limit else pairs


def _column(folder: Path, name: str, dtype: str, cls: type[RaggedArray]) -> RaggedArray:
    offsets = np.load(folder / f"{name}.offsets.npy")
    if offsets[-1] == 0:
        return cls(np.zeros(0, dtype=dtype), offsets)
    return cls(np.memmap(folder / name, dtype=dtype, mode="r"), offsets)


def _open_pairs(folder: Path, dtypes: dict[str, str]) -> TokenizedPairs:
    return TokenizedPairs(_column(folder, "source.ids", dtypes["source"], RaggedArray),
                          _column(folder, "target.ids", dtypes["target"], RaggedArray),
                          _column(folder, "source.text", "uint8", TextColumn),
                          _column(folder, "target.text", "uint8", TextColumn))


class _ColumnWriter:
    """Appends rows to ``folder/name`` and collects their offsets (a compact int64 buffer, not a Python list)."""

    def __init__(self, folder: Path, name: str, dtype: str) -> None:
        self.folder, self.name, self.dtype = folder, name, np.dtype(dtype)
        self.handle = open(folder / name, "wb")
        self.offsets = [np.zeros(1, dtype=np.int64)]
        self.end = 0

    def write(self, rows: Sequence[Sequence[int] | bytes]) -> None:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        if self.dtype == np.uint8:
            self.handle.write(b"".join(rows))
        else:
            flat = np.fromiter((i for r in rows for i in r), dtype=self.dtype, count=int(lengths.sum()))
            flat.tofile(self.handle)
        self.offsets.append(self.end + np.cumsum(lengths))
        self.end += int(lengths.sum())

    def close(self) -> None:
        self.handle.close()
        np.save(self.folder / f"{self.name}.offsets.npy", np.concatenate(self.offsets))


def _id_dtype(tokenizer: Tokenizer) -> str:
    return "uint16" if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else "int32"


def encode_pairs(pairs: Iterable[SentencePair], source_tokenizer: Tokenizer, target_tokenizer: Tokenizer,
                 folder: str | Path, progress: Callable[[int], None] | None = None) -> TokenizedPairs:
    """Encode ``pairs`` (any iterable, streamed) into the arrays of ``folder`` and open them memory-mapped.

    An empty source encodes as one ``<unk>`` (the encoder needs a step); targets get ``<bos>`` and ``<eos>``.
    ``progress(n)`` is called after each chunk of n pairs.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtypes = {"source": _id_dtype(source_tokenizer), "target": _id_dtype(target_tokenizer)}
    writers = {"source.ids": _ColumnWriter(folder, "source.ids", dtypes["source"]),
               "target.ids": _ColumnWriter(folder, "target.ids", dtypes["target"]),
               "source.text": _ColumnWriter(folder, "source.text", "uint8"),
               "target.text": _ColumnWriter(folder, "target.text", "uint8")}
    unk = [source_tokenizer.unk_id]
    stream = iter(pairs)
    try:
        while chunk := list(islice(stream, CHUNK_PAIRS)):
            writers["source.ids"].write([source_tokenizer.encode(p.source) or unk for p in chunk])
            writers["target.ids"].write([target_tokenizer.encode(p.target, add_bos=True, add_eos=True)
                                         for p in chunk])
            writers["source.text"].write([p.source.encode("utf-8") for p in chunk])
            writers["target.text"].write([p.target.encode("utf-8") for p in chunk])
            if progress is not None:
                progress(len(chunk))
    finally:
        for writer in writers.values():
            writer.close()
    (folder / "dtypes.json").write_text(json.dumps(dtypes) + "\n", encoding="utf-8")
    return _open_pairs(folder, dtypes)


def _fingerprint(path: Path) -> dict[str, Any]:
    return {"path": str(path), "sha256": sha256_of(path)}


def _progress_bar(progress: bool | None, what: str):
    from tqdm.auto import tqdm

    return tqdm(desc=what, unit=" pairs", unit_scale=True, file=sys.stderr, leave=False,
                disable=None if progress is None else not progress)


def tokenize_corpus(run_dir: str | Path, train: str | Path, valid: str | Path, *, source_level: str,
                    target_level: str, bpe_vocab_size: int = 8000, limit: int = 0,
                    progress: bool | None = None, shared: bool = False) -> TokenizedCorpus:
    """Build (or reuse) the tokenizers and memory-mapped ids of a ``source<TAB>target`` corpus in ``run_dir``.

    Args:
        run_dir: the run directory: the tokenizers go to ``source_vocab.json`` / ``target_vocab.json``, the arrays
            under ``data/``.
        train, valid: TSV files (see :func:`rnnkit.data.read_parallel`); the tokenizers learn from ``train``.
        source_level, target_level: ``char`` | ``word`` | ``bpe`` for each side.
        bpe_vocab_size: vocabulary size of a BPE side.
        limit: use only the first ``limit`` training pairs (0 = all).
        progress: a progress bar while encoding (None: only on a terminal).
        shared: one tokenizer for both sides, learnt from the sources and the targets (copy attention and shared
            embeddings need one vocabulary); needs ``source_level == target_level``.
    """
    for side, level in (("source_level", source_level), ("target_level", target_level)):
        if level not in TOKEN_LEVELS:
            raise ValueError(f"{side} must be one of {', '.join(TOKEN_LEVELS)}, got {level!r}")
    if shared and source_level != target_level:
        raise ValueError(f"one shared vocabulary needs the same tokens on both sides, got source_level "
                         f"{source_level!r} and target_level {target_level!r}")
    run_dir = Path(run_dir)
    train, valid = Path(train), Path(valid)
    data = run_dir / DATA_FOLDER
    wanted = {"format": MANIFEST_FORMAT, "version": FORMAT_VERSION, "source_level": source_level,
              "target_level": target_level, "bpe_vocab_size": bpe_vocab_size if "bpe" in (source_level, target_level)
              else None, "limit": limit, "shared": bool(shared), "train": _fingerprint(train),
              "valid": _fingerprint(valid)}
    reused = _reuse(run_dir, wanted)
    if reused is not None:
        return reused
    if shared:
        texts = (text for p in _pairs(train, limit) for text in (p.source, p.target))
        source_tokenizer = target_tokenizer = build_tokenizer(source_level, texts, bpe_vocab_size)
    else:
        source_tokenizer = build_tokenizer(source_level, (p.source for p in _pairs(train, limit)), bpe_vocab_size)
        target_tokenizer = build_tokenizer(target_level, (p.target for p in _pairs(train, limit)), bpe_vocab_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    source_tokenizer.save(run_dir / SOURCE_VOCAB_FILE)
    target_tokenizer.save(run_dir / TARGET_VOCAB_FILE)
    scratch = Path(tempfile.mkdtemp(dir=run_dir, prefix=".data-"))
    try:
        for split, path, split_limit in (("train", train, limit), ("valid", valid, 0)):
            with _progress_bar(progress, f"tokenizing {split} pairs") as bar:
                encode_pairs(_pairs(path, split_limit), source_tokenizer, target_tokenizer, scratch / split,
                             progress=bar.update)
        wanted["tokenizers"] = {SOURCE_VOCAB_FILE: sha256_of(run_dir / SOURCE_VOCAB_FILE),
                                TARGET_VOCAB_FILE: sha256_of(run_dir / TARGET_VOCAB_FILE)}
        (scratch / "manifest.json").write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")
        if data.exists():
            shutil.rmtree(data)
        os.replace(scratch, data)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return _open(run_dir)


def _open(run_dir: Path) -> TokenizedCorpus:
    data = run_dir / DATA_FOLDER
    splits = {}
    for split in ("train", "valid"):
        dtypes = json.loads((data / split / "dtypes.json").read_text(encoding="utf-8"))
        splits[split] = _open_pairs(data / split, dtypes)
    return TokenizedCorpus(load_tokenizer(run_dir / SOURCE_VOCAB_FILE), load_tokenizer(run_dir / TARGET_VOCAB_FILE),
                           splits["train"], splits["valid"])


def trained_sources(run_dir: str | Path) -> frozenset[str]:
    """The source lines a run was trained on, read back from ``RUN_DIR/data/train`` (what
    :func:`tokenize_corpus` wrote: the pairs training saw, after ``limit``). A :class:`DataError` names the
    folder if it is missing or unreadable."""
    folder = Path(run_dir) / DATA_FOLDER / "train"
    try:
        dtypes = json.loads((folder / "dtypes.json").read_text(encoding="utf-8"))
        text = _open_pairs(folder, dtypes).source_text
        return frozenset(text[i] for i in range(len(text)))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(folder, None, f"cannot read the run's training data ({err})") from None


def _reuse(run_dir: Path, wanted: dict[str, Any]) -> TokenizedCorpus | None:
    """The corpus already in ``run_dir`` if it was built from exactly ``wanted`` and is intact, else None."""
    try:
        manifest = json.loads((run_dir / DATA_FOLDER / "manifest.json").read_text(encoding="utf-8"))
        tokenizers = manifest.pop("tokenizers")
        if manifest != wanted or any(sha256_of(run_dir / name) != digest for name, digest in tokenizers.items()):
            return None
        return _open(run_dir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, DataError):
        return None
