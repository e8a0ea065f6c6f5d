r"""Many-to-one models: a :class:`SequenceEncoder` (tokens or float features -> (bi)directional recurrent layer
-> :class:`Pooling` over the valid steps) read out by a linear layer, as class logits
(:class:`SequenceClassifier`) or real values (:class:`SequenceRegressor`).

Example::

    model = SequenceClassifier(SequenceClassifierConfig(vocab_size=1000, num_classes=2, pooling="mean"))
    logits = model(tokens, lengths)           # (B, 2)
    classes = model.predict(tokens, lengths)  # (B,)
"""

from __future__ import annotations

import math
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

__all__ = [
    "POOLINGS",
    "SequenceEncoderConfig",
    "SequenceClassifierConfig",
    "SequenceRegressorConfig",
    "Pooling",
    "SequenceEncoder",
    "SequenceClassifier",
    "SequenceRegressor",
]

POOLINGS = ("last", "mean", "max", "attention")


@dataclass(kw_only=True)
class SequenceEncoderConfig(RecurrentConfig):
    """A :class:`SequenceEncoder`: token inputs (``vocab_size`` given) or float inputs of ``input_size``
    features (``vocab_size=None``), a (bi)directional recurrent layer and a pooling from :data:`POOLINGS`."""

    vocab_size: int | None = None
    input_size: int | None = None
    embedding_size: int = 128
    bidirectional: bool = True
    pooling: str = "last"
    pad_id: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.vocab_size is None) == (self.input_size is None):
            raise ValueError(
                "give exactly one of vocab_size (token inputs, embedded) and input_size (float inputs "
                f"(B, T, input_size), no embedding), got vocab_size={self.vocab_size!r}, "
                f"input_size={self.input_size!r}"
            )
        if self.vocab_size is not None:
            check_size("vocab_size", self.vocab_size)
            check_size("embedding_size", self.embedding_size)
        else:
            check_size("input_size", self.input_size)
        check_bool("bidirectional", self.bidirectional)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


@dataclass(kw_only=True)
class SequenceClassifierConfig(SequenceEncoderConfig):
    """:class:`SequenceClassifier` settings: the encoder's, plus the number of classes."""

    num_classes: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check_size("num_classes", self.num_classes)


@dataclass(kw_only=True)
class SequenceRegressorConfig(SequenceEncoderConfig):
    """:class:`SequenceRegressor` settings: the encoder's, plus the number of predicted values."""

    output_size: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_size("output_size", self.output_size)


class Pooling(nn.Module):
    r"""Summarise the outputs o_1..o_T of a recurrent layer into one vector, over the valid steps only.

    * ``"last"``: o at each sequence's own last valid step; bidirectional: the forward direction's output at
      the last valid step concatenated with the backward direction's output at step 1 (where the backward
      pass over the valid prefix ends), i.e. each direction's final state.
    * ``"mean"``: sum_{t <= len} o_t / len.
    * ``"max"``: element-wise max over t <= len.
    * ``"attention"``: a learned query q (Yang et al. 2016, hierarchical attention networks, eq. 8-10):
      u_t = tanh(W o_t + b), alpha_t = softmax_t(q . u_t) over the valid steps, pooled = sum_t alpha_t o_t.

    Shapes: outputs (B, T, D), lengths (B,) -> pooled (B, D), weights (B, T) (attention only, else None).
    """

    def __init__(self, kind: str, size: int, bidirectional: bool = False) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {kind!r}")
        self.kind = kind
        self.size = size
        self.bidirectional = bidirectional
        if kind == "attention":
            self.projection = nn.Linear(size, size)  # W, b
            self.query = nn.Parameter(torch.empty(size).uniform_(-1 / math.sqrt(size), 1 / math.sqrt(size)))

    def forward(self, outputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        batch_size, max_length, size = outputs.shape
        valid = valid_mask(lengths, max_length)  # (B, T)
        if self.kind == "last":
            rows = torch.arange(batch_size, device=outputs.device)
            last = outputs[rows, lengths - 1]  # (B, D)
            if not self.bidirectional:
                return last, None
            half = size // 2
            # The backward direction reads each valid prefix from its end, so its final state is at step 1.
            return torch.cat([last[:, :half], outputs[:, 0, half:]], dim=1), None  # (B, D)
        if self.kind == "mean":
            total = outputs.masked_fill(~valid.unsqueeze(2), 0.0).sum(dim=1)  # (B, D)
            return total / lengths.unsqueeze(1).to(outputs.dtype), None
        if self.kind == "max":
            return outputs.masked_fill(~valid.unsqueeze(2), -math.inf).amax(dim=1), None  # (B, D)
        scores = torch.tanh(self.projection(outputs)) @ self.query  # (B, T)
        weights = scores.masked_fill(~valid, -math.inf).softmax(dim=1)  # (B, T), 0 at padding
        return torch.einsum("bt,btd->bd", weights, outputs), weights  # (B, D)

    def extra_repr(self) -> str:
        return f"{self.kind!r}, {self.size}" + (", bidirectional=True" if self.bidirectional else "")


class SequenceEncoder(nn.Module):
    """Inputs -> recurrent layer -> :class:`Pooling`: a vector per sequence.

    Inputs are token ids (B, T) when the config has a ``vocab_size`` (embedded, then dropout), or float
    features (B, T, F) when it has an ``input_size`` F (no embedding: the adding problem, sequential digits).
    ``output_size`` is H, or 2H for a bidirectional layer.
    """

    def __init__(self, config: SequenceEncoderConfig) -> None:
        super().__init__()
        self.config = config
        if config.vocab_size is not None:
            self.embedding: nn.Embedding | None = nn.Embedding(config.vocab_size, config.embedding_size)
            width = config.embedding_size
        else:
            self.embedding = None
            width = config.input_size
        self.dropout = nn.Dropout(config.dropout)
        self.recurrent = recurrent_layer(config, width, config.bidirectional)
        self.output_size = config.hidden_size * (2 if config.bidirectional else 1)
        self.pooling = Pooling(config.pooling, self.output_size, config.bidirectional)

    def embed(self, inputs: Tensor) -> Tensor:
        """(B, T, E) embeddings of token inputs, or the float inputs checked and passed through."""
        if self.embedding is not None:
            check_tokens(inputs, self.config.vocab_size, "inputs")
            return self.embedding(inputs)  # (B, T, E)
        expected = self.config.input_size
        if not isinstance(inputs, Tensor) or inputs.dim() != 3 or inputs.size(2) != expected:
            given = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"inputs must be float features (B, T, input_size={expected}), got {given}")
        if not inputs.dtype.is_floating_point:
            raise ValueError(f"float-feature inputs must be floating point, got dtype {inputs.dtype}")
        return inputs

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Pooled features (B, D) and the attention weights (B, T) (None unless pooling is "attention").

        ``lengths`` (B,) gives each sequence's number of real steps (None: all T).
        """
        embedded = self.dropout(self.embed(inputs))  # (B, T, E)
        batch_size, max_length = embedded.shape[:2]
        lengths = lengths_or_full(lengths, batch_size, max_length, embedded.device)
        outputs, _ = self.recurrent(embedded, lengths=lengths)  # (B, T, D); 0 past each length
        return self.pooling(outputs, lengths)


class SequenceClassifier(TaskModel):
    """Many-to-one classification: :class:`SequenceEncoder` -> dropout -> linear -> class logits (B, C).

    Example::

        model = SequenceClassifier(SequenceClassifierConfig(vocab_size=1000, num_classes=2, pooling="mean"))
        logits = model(tokens, lengths)           # (B, 2)
    """

    task = "classify"
    config_class = SequenceClassifierConfig

    def __init__(self, config: SequenceClassifierConfig | dict[str, Any]) -> None:
        super().__init__(config)
        config = self.config
        self.encoder = SequenceEncoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(self.encoder.output_size, self._num_outputs())
        self.attention_weights: Tensor | None = None  # (B, T) of the last call, with attention pooling

    def _num_outputs(self) -> int:
        return self.config.num_classes

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """inputs (B, T) token ids or (B, T, F) floats, lengths (B,) -> outputs (B, C)."""
        pooled, weights = self.encoder(inputs, lengths)  # (B, D), (B, T) or None
        self.attention_weights = None if weights is None else weights.detach()
        return self.output(self.dropout(pooled))  # (B, C)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of the class logits (B, C) against class ids (B,)."""
        return F.cross_entropy(outputs, targets)

    @torch.no_grad()
    def predict(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The most probable class of each sequence, (B,) long (in evaluation mode)."""
        with evaluating(self):
            return self(inputs, lengths).argmax(dim=-1)


class SequenceRegressor(SequenceClassifier):
    """Many-to-one regression: the classifier's network with ``output_size`` real outputs (B, O) and a
    mean-squared-error loss (the adding problem, Hochreiter & Schmidhuber 1997, section 5.4)."""

    task = "regress"
    config_class = SequenceRegressorConfig

    def _num_outputs(self) -> int:
        return self.config.output_size

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean squared error; targets (B, O), or (B,) when O = 1."""
        if targets.dim() == 1 and outputs.size(1) == 1:
            targets = targets.unsqueeze(1)  # (B, 1)
        if targets.shape != outputs.shape:
            raise ValueError(f"targets must have shape {tuple(outputs.shape)}, got {tuple(targets.shape)}")
        return F.mse_loss(outputs, targets.to(outputs.dtype))

    @torch.no_grad()
    def predict(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The predicted values (B, O) (in evaluation mode)."""
        with evaluating(self):
            return self(inputs, lengths)
