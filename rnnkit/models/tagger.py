r"""The sequence tagger: one tag per token from a (bi)directional recurrent layer, optionally decoded by a
linear-chain :class:`~rnnkit.models.crf.CRF`.

Example::

    model = SequenceTagger(SequenceTaggerConfig(vocab_size=1000, num_tags=17, crf=True))
    loss = model.loss(model(tokens, lengths), tags, lengths)
    predicted = model.decode(tokens, lengths)      # list of tag-id lists, one per sentence
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.checks import check_bool, check_size
from rnnkit.data.batching import valid_mask
from rnnkit.models.base import (
    RecurrentConfig,
    TaskModel,
    check_tokens,
    evaluating,
    lengths_or_full,
    recurrent_layer,
)
from rnnkit.models.crf import CRF

__all__ = ["SequenceTaggerConfig", "SequenceTagger"]


@dataclass(kw_only=True)
class SequenceTaggerConfig(RecurrentConfig):
    """:class:`SequenceTagger` settings: vocabulary, number of tags K, direction, whether a CRF decodes."""

    vocab_size: int
    num_tags: int
    embedding_size: int = 128
    bidirectional: bool = True
    crf: bool = False
    pad_id: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_size("vocab_size", self.vocab_size)
        check_size("num_tags", self.num_tags)
        check_size("embedding_size", self.embedding_size)
        check_bool("bidirectional", self.bidirectional)
        check_bool("crf", self.crf)


class SequenceTagger(TaskModel):
    """One tag per token: embedding -> (bi)directional recurrent layer -> dropout -> linear emission scores
    (B, T, K), trained with per-token cross-entropy, or with the sentence-level likelihood of a :class:`CRF`
    (``crf=True``, Lample et al. 2016) and decoded by Viterbi.

    Example::

        model = SequenceTagger(SequenceTaggerConfig(vocab_size=1000, num_tags=17, crf=True))
        loss = model.loss(model(tokens, lengths), tags, lengths)
        predicted = model.decode(tokens, lengths)      # list of tag-id lists, one per sentence
    """

    task = "tag"
    config_class = SequenceTaggerConfig

    def __init__(self, config: SequenceTaggerConfig | dict[str, Any]) -> None:
        super().__init__(config)
        config = self.config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.recurrent = recurrent_layer(config, config.embedding_size, config.bidirectional)
        self.dropout = nn.Dropout(config.dropout)
        width = config.hidden_size * (2 if config.bidirectional else 1)
        self.emissions = nn.Linear(width, config.num_tags)
        self.crf = CRF(config.num_tags) if config.crf else None

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Emission scores (B, T, K) of tokens (B, T) with lengths (B,)."""
        check_tokens(tokens, self.config.vocab_size)
        batch_size, max_length = tokens.shape
        lengths = lengths_or_full(lengths, batch_size, max_length, tokens.device)
        embedded = self.dropout(self.embedding(tokens))  # (B, T, E)
        outputs, _ = self.recurrent(embedded, lengths=lengths)  # (B, T, D)
        return self.emissions(self.dropout(outputs))  # (B, T, K)

    def loss(self, emissions: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Mean over sentences of the CRF negative log-likelihood, or mean token cross-entropy without a CRF;
        positions past each length are ignored."""
        batch_size, max_length = emissions.shape[:2]
        if tags.shape != (batch_size, max_length):
            raise ValueError(f"tags must have shape {(batch_size, max_length)}, got {tuple(tags.shape)}")
        lengths = lengths_or_full(lengths, batch_size, max_length, emissions.device)
        valid = valid_mask(lengths, max_length)  # (B, T)
        if self.crf is not None:
            return self.crf(emissions, tags, valid, reduction="mean")
        return F.cross_entropy(emissions[valid], tags[valid].long())

    @torch.no_grad()
    def decode(self, tokens: Tensor, lengths: Tensor | None = None) -> list[list[int]]:
        """Tag ids of each sentence: Viterbi with a CRF, else per-token argmax (in evaluation mode)."""
        with evaluating(self):
            emissions = self(tokens, lengths)  # (B, T, K)
        batch_size, max_length = tokens.shape
        lengths = lengths_or_full(lengths, batch_size, max_length, tokens.device)
        if self.crf is not None:
            return self.crf.decode(emissions, valid_mask(lengths, max_length))
        best = emissions.argmax(dim=-1).tolist()  # (B, T)
        return [row[:n] for row, n in zip(best, lengths.tolist(), strict=True)]
