"""Subword tokenization by byte-pair encoding, through the maintained ``tokenizers`` library.

BPE (Sennrich et al. 2016) starts from characters and repeatedly merges the most frequent adjacent pair
of symbols until the vocabulary reaches ``vocab_size``; rare words are then spelled with several subwords
instead of becoming ``<unk>``. Words are marked with a leading ``▁`` (the Metaspace scheme of
SentencePiece), so decoding restores the spaces exactly. Text is NFC-normalised first, so that an accented
letter is one symbol whichever way it was typed.

The special tokens are the same as :class:`~rnnkit.data.vocab.Vocab`'s: ``<pad>`` 0, ``<unk>`` 1,
``<bos>`` 2, ``<eos>`` 3.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from rnnkit.data.errors import DataError
from rnnkit.data.jsonfile import FORMAT_VERSION, JSONFile, parse_json_object
from rnnkit.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK, UNK_ID

BPE_FORMAT = "rnnkit.bpe"


class BPETokenizer(JSONFile):
    """Byte-pair-encoding subword tokenizer with rnnkit's special ids; trained, saved and loaded as JSON.

    Example::

        >>> bpe = BPETokenizer.train(["le 5 mars 2024", "5 March 2024"] * 50, vocab_size=60)
        >>> bpe.decode(bpe.encode("le 5 mars 2024", add_bos=True, add_eos=True))
        'le 5 mars 2024'
    """

    level = "bpe"
    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, tokenizer: object) -> None:
        """Wrap a ``tokenizers.Tokenizer``; use :meth:`train` or :meth:`load` rather than calling this."""
        self._tokenizer = tokenizer
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            found = tokenizer.token_to_id(token)
            if found != expected_id:
                raise ValueError(f"special token {token} must have id {expected_id}, found {found}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_freq: int = 2) -> BPETokenizer:
        """Learn merges from ``texts`` until the vocabulary (specials included) has ``vocab_size`` entries.

        Args:
            texts: training sentences.
            vocab_size: target vocabulary size; smaller if the corpus runs out of pairs to merge.
            min_freq: a pair is merged only if it occurs at least this often.
        """
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        if vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} specials, got {vocab_size}")
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        # The specials are listed first, so the trainer gives them ids 0-3 in this order.
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq,
                                      special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and other.to_json() == self.to_json()

    def __repr__(self) -> str:
        return f"BPETokenizer(size={len(self)})"

    def tokenize(self, text: str) -> list[str]:
        """The subword strings of ``text`` (``▁`` marks the start of a word)."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def token_to_id(self, token: str) -> int:
        found = self._tokenizer.token_to_id(token)
        return UNK_ID if found is None else found

    def id_to_token(self, index: int) -> str:
        token = self._tokenizer.id_to_token(index)
        if token is None:
            raise ValueError(f"token id must be in [0, {len(self)}), got {index}")
        return token

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_specials)

    def to_json(self) -> str:
        inner = json.loads(self._tokenizer.to_str())
        document = {"format": BPE_FORMAT, "version": FORMAT_VERSION, "tokenizer": inner}
        return json.dumps(document, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> BPETokenizer:
        from tokenizers import Tokenizer

        obj = parse_json_object(text, source, BPE_FORMAT)
        inner = obj.get("tokenizer")
        if not isinstance(inner, dict):
            raise DataError(source, None, "bad BPE tokenizer: 'tokenizer' must be a JSON object")
        try:
            tokenizer = Tokenizer.from_str(json.dumps(inner))
            return cls(tokenizer)
        except Exception as err:  # tokenizers raises its own exception type for a corrupt model
            raise DataError(source, None, f"bad BPE tokenizer: {err}") from None
