"""What models and the training loop need from any tokenizer, and loading whichever tokenizer a file holds.

Both :class:`~rnnkit.data.vocab.Vocab` (characters, words) and :class:`~rnnkit.data.bpe.BPETokenizer`
(subwords) provide the :class:`Tokenizer` interface and reserve the same four special ids.

Example::

    tokenizer = load_tokenizer("runs/x/source_vocab.json")     # a Vocab or a BPETokenizer
    ids = tokenizer.encode("le 5 mars", add_bos=True, add_eos=True)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from rnnkit.data.bpe import BPE_FORMAT, BPETokenizer
from rnnkit.data.jsonfile import load_json, read_json_text
from rnnkit.data.vocab import Vocab

__all__ = ["Tokenizer", "load_tokenizer"]


class Tokenizer(Protocol):
    """What models and the training loop need from any tokenizer (:class:`Vocab` or ``BPETokenizer``)."""

    level: str
    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int

    def __len__(self) -> int: ...
    def tokenize(self, text: str) -> list[str]: ...
    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]: ...
    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str: ...
    def save(self, path: str | Path) -> None: ...


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a :class:`Vocab` or a ``BPETokenizer`` saved as JSON, whichever the file holds."""
    text = read_json_text(path)
    try:
        kind = load_json(text).get("format")
    except (json.JSONDecodeError, AttributeError):
        kind = None
    if kind == BPE_FORMAT:
        return BPETokenizer.from_json(text, source=path)
    return Vocab.from_json(text, source=path)
