"""Vocabularies: character- and word-level :class:`Vocab`, and :class:`LabelSet` for class labels and tags.

Every token vocabulary in rnnkit (including :class:`~rnnkit.data.bpe.BPETokenizer`) reserves the same four
special ids, which the seq2seq models and the decoders rely on:

=====  =========  ==================================================
id     token      meaning
=====  =========  ==================================================
0      ``<pad>``  padding past a sequence's length (never predicted)
1      ``<unk>``  any token not in the vocabulary
2      ``<bos>``  begin of sequence: the decoder's first input
3      ``<eos>``  end of sequence (and end of line in word-level LM streams)
=====  =========  ==================================================

Vocabularies are saved as JSON (nothing that executes code on load) and validated when loaded.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from rnnkit.checks import check_size
from rnnkit.data.errors import DataError
from rnnkit.data.jsonfile import FORMAT_VERSION, JSONFile, parse_json_object

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
LEVELS = ("char", "word")

VOCAB_FORMAT = "rnnkit.vocab"
LABELS_FORMAT = "rnnkit.labels"


class Vocab(JSONFile):
    """A character- or word-level vocabulary with the four specials at ids 0-3.

    Word level splits text on whitespace and decodes by joining with single spaces; character level
    treats every character (spaces and newlines included) as a token and decodes by concatenation.

    Example::

        >>> v = Vocab.build(["the cat", "the dog"], level="word")
        >>> v.encode("the bird", add_eos=True)
        [4, 1, 3]
        >>> v.decode([4, 5])
        'the cat'
    """

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, tokens: Sequence[str], level: str = "word") -> None:
        """``tokens``: the ordinary tokens in id order (ids 4, 5, ...); the specials are put in front."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        tokens = list(tokens)
        clash = [t for t in tokens if t in SPECIAL_TOKENS]
        if clash:
            raise ValueError(f"tokens must not include the special tokens {SPECIAL_TOKENS}, got {clash}")
        if len(set(tokens)) != len(tokens):
            duplicates = sorted(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"tokens must be unique, got duplicates {duplicates[:10]}")
        if level == "char" and any(len(t) != 1 for t in tokens):
            raise ValueError("a character vocabulary holds single characters only")
        self.level = level
        self.itos: list[str] = list(SPECIAL_TOKENS) + tokens
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    # --- building -----------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        texts: Iterable[str | Sequence[str]],
        level: str = "word",
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocab:
        """Count tokens and keep the frequent ones, deterministically.

        Args:
            texts: strings (tokenized at ``level``) or already-tokenized sequences (used as given).
            level: ``"word"`` or ``"char"``.
            min_freq: keep tokens seen at least this often.
            max_size: at most this many entries in total, the 4 specials included (``None``: no limit).

        Tokens are ordered by decreasing count, ties broken by the token itself (code-point order), so
        the same corpus always yields the same ids. Special tokens that occur in the text (PTB has ``<unk>``)
        are not counted: they map to their reserved ids.
        """
        check_size("min_freq", min_freq)
        if max_size is not None and max_size < len(SPECIAL_TOKENS):
            raise ValueError(f"max_size must be >= {len(SPECIAL_TOKENS)} (the specials), got {max_size}")
        probe = cls([], level)
        counts: Counter[str] = Counter()
        for item in texts:
            counts.update(probe.tokenize(item) if isinstance(item, str) else item)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        ranked = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIAL_TOKENS)]
        return cls(ranked, level)

    # --- using --------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.level == self.level and other.itos == self.itos

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)})"

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into tokens: whitespace-separated words, or single characters."""
        return list(text) if self.level == "char" else text.split()

    def token_to_id(self, token: str) -> int:
        return self.stoi.get(token, UNK_ID)

    def id_to_token(self, index: int) -> str:
        if not 0 <= index < len(self.itos):
            raise ValueError(f"token id must be in [0, {len(self.itos)}), got {index}")
        return self.itos[index]

    def encode(self, text: str | Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text`` (a string, or a sequence of tokens); unknown tokens become ``<unk>`` (1)."""
        tokens = self.tokenize(text) if isinstance(text, str) else text
        ids = [self.stoi.get(t, UNK_ID) for t in tokens]
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        """Text of ``ids``; with ``skip_specials`` pad/bos/eos are dropped (``<unk>`` is kept, visibly)."""
        tokens = [self.id_to_token(int(i)) for i in ids]
        if skip_specials:
            tokens = [t for t in tokens if t not in (PAD, BOS, EOS)]
        return "".join(tokens) if self.level == "char" else " ".join(tokens)

    # --- saving -------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {"format": VOCAB_FORMAT, "version": FORMAT_VERSION, "level": self.level,
             "specials": list(SPECIAL_TOKENS), "tokens": self.itos[len(SPECIAL_TOKENS):]},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> Vocab:
        """Rebuild a vocabulary from :meth:`to_json` output; anything else raises :class:`DataError`."""
        obj = parse_json_object(text, source, VOCAB_FORMAT)
        level, specials, tokens = obj.get("level"), obj.get("specials"), obj.get("tokens")
        if level not in LEVELS:
            raise DataError(source, None, f"bad vocabulary: 'level' must be one of {LEVELS}, found {level!r}")
        if specials != list(SPECIAL_TOKENS):
            raise DataError(source, None, f"bad vocabulary: 'specials' must be {list(SPECIAL_TOKENS)} at ids "
                                          f"0-3, found {specials!r}")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataError(source, None, "bad vocabulary: 'tokens' must be a list of strings")
        try:
            return cls(tokens, level)
        except ValueError as err:
            raise DataError(source, None, f"bad vocabulary: {err}") from None



class LabelSet(JSONFile):
    """The classes of a classifier or the tags of a tagger: label <-> id, sorted, no specials.

    Unknown labels are an error (a label the model cannot output is a data problem, not an ``<unk>``).
    Padding in tag batches uses ``ignore_index`` (-100, torch's default) rather than a label id.
    """

    def __init__(self, labels: Sequence[str]) -> None:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels}")
        if not labels:
            raise ValueError("a label set needs at least one label")
        self.labels = labels
        self.index = {label: i for i, label in enumerate(labels)}

    @classmethod
    def build(cls, labels: Iterable[str | Sequence[str]]) -> LabelSet:
        """Collect the distinct labels (or tags of tag sequences) in sorted order, for stable ids."""
        seen: set[str] = set()
        for item in labels:
            seen.update([item] if isinstance(item, str) else item)
        return cls(sorted(seen))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and other.labels == self.labels

    def __repr__(self) -> str:
        return f"LabelSet({self.labels})"

    def encode(self, label: str) -> int:
        if label not in self.index:
            raise ValueError(f"unknown label {label!r}; known labels: {', '.join(self.labels)}")
        return self.index[label]

    def encode_all(self, labels: Iterable[str]) -> list[int]:
        return [self.encode(label) for label in labels]

    def decode(self, index: int) -> str:
        if not 0 <= index < len(self.labels):
            raise ValueError(f"label id must be in [0, {len(self.labels)}), got {index}")
        return self.labels[index]

    def to_json(self) -> str:
        return json.dumps({"format": LABELS_FORMAT, "version": FORMAT_VERSION, "labels": self.labels},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> LabelSet:
        obj = parse_json_object(text, source, LABELS_FORMAT)
        labels = obj.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise DataError(source, None, "bad label set: 'labels' must be a list of strings")
        try:
            return cls(labels)
        except ValueError as err:
            raise DataError(source, None, f"bad label set: {err}") from None
