r"""Task models on the rnnkit layers: language model, sequence classifier / regressor, tagger, forecaster.

Every model is a ``torch.nn.Module`` with a small config dataclass (``model.config``, JSON-serialisable with
``config.to_dict()``, rebuilt with ``Model.from_config(dict_or_config)``) and the recurrent part chosen by
name: ``cell`` = "lstm" | "gru" | "rnn" (``layer_norm`` for lstm/gru), ``num_layers``, ``hidden_size``,
``dropout``. Inputs are batch-first; variable-length batches are right-padded and come with ``lengths``
(B,), each in [1, T].

* :class:`LanguageModel` — embedding -> recurrent layer -> dropout -> linear over the vocabulary, optionally
  with tied input and output embeddings; carries its state across chunks (truncated BPTT) and implements
  the decoder step of DESIGN section 3, so :mod:`rnnkit.decoding` generates text from it.
* :class:`SequenceClassifier`, :class:`SequenceRegressor` — many-to-one: a :class:`SequenceEncoder`
  (tokens or float features -> (bi)directional recurrent layer -> :class:`Pooling` over the valid steps)
  -> linear.
* :class:`SequenceTagger` — bidirectional recurrent layer -> per-token emission scores, optionally decoded
  by a linear-chain :class:`CRF`.
* :class:`Forecaster` — a window of past values of a series -> recurrent encoder -> the next ``horizon``
  values at once, in units standardised by a :class:`StandardScaler` fitted on the training part.

:func:`build_model` makes any of them from a task name and a config dict.

Example::

    model = build_model("lm", {"vocab_size": 100, "hidden_size": 64, "embedding_size": 64,
                               "tie_weights": True})
    logits, state = model(tokens)                      # (B, T, V)
    logits, state = model(next_tokens, LanguageModel.detach_state(state))   # next chunk, truncated BPTT
    continuation = model.generate(prompt_ids, 50, temperature=0.8, top_k=10, generator=torch.Generator())
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.layers import GRU, LSTM, RNN

__all__ = [
    "CELLS",
    "POOLINGS",
    "TASKS",
    "RecurrentConfig",
    "LanguageModelConfig",
    "SequenceEncoderConfig",
    "SequenceClassifierConfig",
    "SequenceRegressorConfig",
    "SequenceTaggerConfig",
    "ForecasterConfig",
    "StandardScaler",
    "LanguageModel",
    "Pooling",
    "SequenceEncoder",
    "SequenceClassifier",
    "SequenceRegressor",
    "CRF",
    "SequenceTagger",
    "Forecaster",
    "make_windows",
    "build_model",
]

CELLS = ("lstm", "gru", "rnn")
POOLINGS = ("last", "mean", "max", "attention")
_LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


# ----------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


@dataclass(kw_only=True)
class RecurrentConfig:
    """The recurrent part shared by every model.

    Attributes:
        cell: "lstm", "gru" or "rnn" (tanh Elman RNN).
        hidden_size: H, the state size of each direction.
        num_layers: stacked recurrent layers.
        dropout: probability of dropping a unit on the embeddings, between recurrent layers and before the
            output layer (Zaremba et al. 2014: dropout on the non-recurrent connections only).
        layer_norm: layer-normalised cells (Ba et al. 2016); lstm and gru only.
    """

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0
    layer_norm: bool = False

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        _check_positive_int("hidden_size", self.hidden_size)
        _check_positive_int("num_layers", self.num_layers)
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        _check_bool("layer_norm", self.layer_norm)
        if self.layer_norm and self.cell == "rnn":
            raise ValueError("layer_norm is available for the 'lstm' and 'gru' cells, got cell='rnn'")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (nested dataclasses as dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | RecurrentConfig) -> RecurrentConfig:
        """Build from a dict (e.g. read from ``config.json``); unknown or missing keys raise ValueError."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__} expects a dict or a {cls.__name__}, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys are {sorted(known)}")
        missing = sorted(
            f.name for f in fields(cls)
            if f.name not in data and f.default is MISSING and f.default_factory is MISSING
        )  # fmt: skip
        if missing:
            raise ValueError(f"{cls.__name__} needs the keys {missing}")
        return cls(**data)


@dataclass(kw_only=True)
class LanguageModelConfig(RecurrentConfig):
    """:class:`LanguageModel` settings: vocabulary size V, embedding size E, weight tying (needs E == H), and
    the ids of padding (ignored by the loss) and of the token that starts generation from an empty prompt."""

    vocab_size: int
    embedding_size: int = 128
    tie_weights: bool = False
    pad_id: int = 0
    bos_id: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int("vocab_size", self.vocab_size)
        _check_positive_int("embedding_size", self.embedding_size)
        _check_bool("tie_weights", self.tie_weights)
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(
                "tie_weights shares the embedding matrix (V, E) with the output layer (V, H), so it needs "
                f"embedding_size == hidden_size, got {self.embedding_size} and {self.hidden_size}"
            )


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
            _check_positive_int("vocab_size", self.vocab_size)
            _check_positive_int("embedding_size", self.embedding_size)
        else:
            _check_positive_int("input_size", self.input_size)
        _check_bool("bidirectional", self.bidirectional)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


@dataclass(kw_only=True)
class SequenceClassifierConfig(SequenceEncoderConfig):
    """:class:`SequenceClassifier` settings: the encoder's, plus the number of classes."""

    num_classes: int

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int("num_classes", self.num_classes)


@dataclass(kw_only=True)
class SequenceRegressorConfig(SequenceEncoderConfig):
    """:class:`SequenceRegressor` settings: the encoder's, plus the number of predicted values."""

    output_size: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int("output_size", self.output_size)


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
        _check_positive_int("vocab_size", self.vocab_size)
        _check_positive_int("num_tags", self.num_tags)
        _check_positive_int("embedding_size", self.embedding_size)
        _check_bool("bidirectional", self.bidirectional)
        _check_bool("crf", self.crf)


@dataclass
class StandardScaler:
    """Standardisation z = (y - mean) / std of a series, with the statistics of its training part only
    (fitting on all of it would leak the validation and test values into training)."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        self.mean, self.std = float(self.mean), float(self.std)
        if not math.isfinite(self.mean) or not math.isfinite(self.std) or self.std <= 0:
            raise ValueError(f"a scaler needs a finite mean and std > 0, got {self.mean} and {self.std}")

    @classmethod
    def fit(cls, values) -> StandardScaler:
        """Mean and (population) standard deviation of ``values``; a constant series gets std 1."""
        if isinstance(values, Tensor):
            values = values.detach().cpu().numpy()
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError(f"fitting a scaler needs finite values (at least one), got {values.size} values")
        std = float(values.std())
        return cls(float(values.mean()), std if std > 0 else 1.0)

    def transform(self, values):
        """(y - mean) / std, for a tensor or array of any shape."""
        return (values - self.mean) / self.std

    def inverse_transform(self, values):
        """z * std + mean, for a tensor or array of any shape."""
        return values * self.std + self.mean


@dataclass(kw_only=True)
class ForecasterConfig(RecurrentConfig):
    """:class:`Forecaster` settings: ``input_len`` past values in, ``horizon`` values out, the scaler."""

    input_len: int
    horizon: int
    scaler: StandardScaler = field(default_factory=StandardScaler)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int("input_len", self.input_len)
        _check_positive_int("horizon", self.horizon)
        if isinstance(self.scaler, dict):  # read back from JSON
            self.scaler = StandardScaler(**self.scaler)
        if not isinstance(self.scaler, StandardScaler):
            raise ValueError(f"scaler must be a StandardScaler or a dict (mean, std), got {self.scaler!r}")


# ----------------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------------


def _recurrent_layer(config: RecurrentConfig, input_size: int, bidirectional: bool) -> nn.Module:
    """The rnnkit layer a config names, batch-first; dropout acts between its layers only."""
    layer_class = _LAYERS[config.cell]
    extras = {"layer_norm": True} if config.layer_norm else {}
    inner_dropout = config.dropout if config.num_layers > 1 else 0.0  # rnnkit warns on dropout with 1 layer
    return layer_class(
        input_size, config.hidden_size, num_layers=config.num_layers, batch_first=True, dropout=inner_dropout,
        bidirectional=bidirectional, **extras,
    )  # fmt: skip


def _valid_mask(lengths: Tensor, max_length: int) -> Tensor:
    """(B, T) bool, True at the real (non-padding) positions of right-padded sequences."""
    return torch.arange(max_length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def _check_lengths(lengths, batch_size: int, max_length: int, device: torch.device) -> Tensor:
    """``lengths`` as an int64 tensor (B,) with values in [1, T]; None means every sequence is full length."""
    if lengths is None:
        return torch.full((batch_size,), max_length, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths must have shape ({batch_size},), one per row, got {tuple(lengths.shape)}")
    lengths = lengths.to(device=device, dtype=torch.long)
    if batch_size and (int(lengths.min()) < 1 or int(lengths.max()) > max_length):
        raise ValueError(f"lengths must be in [1, T={max_length}], got {lengths.tolist()}")
    return lengths


def _check_tokens(tokens: Tensor, vocab_size: int, name: str = "tokens") -> None:
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point:
        given = f"shape {tuple(tokens.shape)}, {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens)
        raise ValueError(f"{name} must be an integer tensor (B, T) of token ids, got {given}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(
            f"{name} must be ids in [0, vocab_size={vocab_size}), got values in "
            f"[{int(tokens.min())}, {int(tokens.max())}]"
        )


def _state_to_layer(state: dict[str, Tensor], cell: str):
    """Batch-first state dict {"h": (B, L*D, H)[, "c": ...]} -> torch's layout (L*D, B, H) the layer takes."""
    h = state["h"].transpose(0, 1).contiguous()  # (L*D, B, H)
    if cell == "lstm":
        return h, state["c"].transpose(0, 1).contiguous()
    return h


def _state_from_layer(hidden, cell: str) -> dict[str, Tensor]:
    """torch's layout (L*D, B, H) -> the batch-first state dict (every tensor has the batch as dim 0)."""
    if cell == "lstm":
        h, c = hidden
        return {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}  # (B, L*D, H) each
    return {"h": hidden.transpose(0, 1)}


@contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) inside the block, then the caller's mode back."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class _TaskModel(nn.Module):
    """What every task model shares: its config (``self.config``) and construction from one."""

    task: ClassVar[str] = ""
    config_class: ClassVar[type[RecurrentConfig]] = RecurrentConfig

    def __init__(self, config: dict[str, Any] | RecurrentConfig) -> None:
        super().__init__()
        self.config = self.config_class.from_dict(config)  # checks a dict, or that it is the right dataclass

    @classmethod
    def from_config(cls, config: dict[str, Any] | RecurrentConfig):
        """Build the model from its config (a dict as read from JSON, or the dataclass)."""
        return cls(config)

    def num_parameters(self) -> int:
        """The number of trainable parameter values (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------------
# Language model
# ----------------------------------------------------------------------------------------------------------


class LanguageModel(_TaskModel):
    r"""Recurrent language model: p(x_{t+1} | x_{<=t}) = softmax(W_o h_t + b_o), h_t from the recurrent layer
    over embedded tokens (Mikolov et al. 2010; Zaremba et al. 2014 for dropout on non-recurrent connections).

    With ``tie_weights`` the output matrix W_o is the embedding matrix (Press & Wolf 2017; Inan et al. 2017).

    The state is a dict whose tensors all have the batch as dim 0 (the contract of :mod:`rnnkit.decoding`):
    ``{"h": (B, L, H)}``, plus ``"c": (B, L, H)`` for the LSTM, L = num_layers. The same dict is what
    :meth:`forward` takes and returns, so training can carry it across chunks (truncated BPTT) and decoding
    can reorder it by rows.

    Shapes: tokens (B, T) long; logits (B, T, V). With ``lengths`` (B,) the positions past a length are
    padding: the returned state is each sequence's state at its own last token.

    Example::

        model = LanguageModel(LanguageModelConfig(vocab_size=50, hidden_size=32, embedding_size=16))
        logits, state = model(tokens)                          # (B, T, 50)
        log_probs, state = model.step(tokens[:, -1], state)    # (B, 50): one more step
    """

    task = "lm"
    config_class = LanguageModelConfig

    def __init__(self, config: LanguageModelConfig | dict[str, Any]) -> None:
        super().__init__(config)
        config = self.config
        # The decoders read these; deliberately no eos_id attribute: generated text runs on unless asked.
        self.pad_id, self.bos_id = config.pad_id, config.bos_id
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.recurrent = _recurrent_layer(config, config.embedding_size, bidirectional=False)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.output.weight = self.embedding.weight  # one (V, E) matrix, E == H

    def start(self, batch_size: int, device: torch.device | None = None) -> dict[str, Tensor]:
        """The initial (zero) state of ``batch_size`` sequences: ``{"h": (B, L, H)[, "c": (B, L, H)]}``."""
        _check_positive_int("batch_size", batch_size)
        weight = self.output.weight
        shape = (batch_size, self.config.num_layers, self.config.hidden_size)
        zeros = {"device": device or weight.device, "dtype": weight.dtype}
        state = {"h": torch.zeros(shape, **zeros)}
        if self.config.cell == "lstm":
            state["c"] = torch.zeros(shape, **zeros)
        return state

    @staticmethod
    def detach_state(state: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
        """The same state cut from the graph: between chunks of truncated BPTT."""
        return None if state is None else {key: value.detach() for key, value in state.items()}

    def _check_state(self, state: dict[str, Tensor], batch_size: int) -> None:
        keys = ("h", "c") if self.config.cell == "lstm" else ("h",)
        shape = (batch_size, self.config.num_layers, self.config.hidden_size)
        if not isinstance(state, dict) or set(state) != set(keys):
            given = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"the {self.config.cell} state must be a dict with keys {keys}, got {given}")
        for key in keys:
            if tuple(state[key].shape) != shape:
                given = tuple(state[key].shape)
                raise ValueError(f"state[{key!r}] must have shape (B, L, H) = {shape}, got {given}")

    def forward(
        self, tokens: Tensor, state: dict[str, Tensor] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits of the next token at every position, and the state after the last (valid) token.

        Args:
            tokens: (B, T) token ids.
            state: the state the sequences continue from (e.g. the previous chunk's), or None for zeros.
            lengths: (B,) number of real tokens of each row, or None (all T).
        Returns:
            ``(logits (B, T, V), state)``.
        """
        _check_tokens(tokens, self.config.vocab_size)
        batch_size, max_length = tokens.shape
        hidden = None
        if state is not None:
            self._check_state(state, batch_size)
            hidden = _state_to_layer(state, self.config.cell)
        if lengths is not None:
            lengths = _check_lengths(lengths, batch_size, max_length, torch.device("cpu"))
        embedded = self.dropout(self.embedding(tokens))  # (B, T, E)
        outputs, hidden = self.recurrent(embedded, hidden, lengths=lengths)  # (B, T, H)
        logits = self.output(self.dropout(outputs))  # (B, T, V)
        return logits, _state_from_layer(hidden, self.config.cell)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy (nats) over the non-``pad_id`` targets: logits (B, T, V), targets (B, T)."""
        if logits.shape[:-1] != targets.shape:
            raise ValueError(
                f"targets must have the logits' shape without V, {tuple(logits.shape[:-1])}, "
                f"got {tuple(targets.shape)}"
            )
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=self.config.pad_id)

    def step(self, prev_tokens: Tensor, state: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
        """One decoder step (DESIGN section 3): prev_tokens (N,) -> (log_probs (N, V), state)."""
        if not isinstance(prev_tokens, Tensor) or prev_tokens.dim() != 1:
            given = getattr(prev_tokens, "shape", prev_tokens)
            raise ValueError(f"prev_tokens must be a 1-D tensor (N,), got {given}")
        logits, state = self(prev_tokens.unsqueeze(1), state)  # (N, 1, V)
        return logits.squeeze(1).log_softmax(dim=-1), state  # (N, V)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Tensor,
        length: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        eos_id: int | None = None,
    ) -> Tensor:
        """Continue a prompt by ``length`` sampled tokens through :func:`rnnkit.decoding.sample_decode`.

        Args:
            prompt_ids: (P,) one prompt, or (B, P) prompts of equal length; P = 0 starts from ``bos_id``.
            length: the number of tokens to generate.
            temperature, top_k, top_p: the sampling filters (temperature 0 is greedy decoding).
            generator: a seeded ``torch.Generator`` makes the result reproducible.
            eos_id: stop a row at this token (padded with ``pad_id`` after it); None: never stop.
        Returns:
            (length,) or (B, length) token ids: the continuation only, without the prompt.
        """
        from rnnkit.decoding import sample_decode

        device = self.output.weight.device
        if isinstance(prompt_ids, Tensor):
            prompt_ids = prompt_ids.to(device)
        else:  # a list of ids (possibly empty)
            prompt_ids = torch.as_tensor(prompt_ids, dtype=torch.long, device=device)
        single = prompt_ids.dim() == 1
        prompts = prompt_ids.unsqueeze(0) if single else prompt_ids  # (B, P)
        _check_tokens(prompts, self.config.vocab_size, "prompt_ids")
        _check_positive_int("length", length)
        with _evaluating(self):  # no dropout while sampling
            batch_size = prompts.size(0)
            # Feed all but the last prompt token here; the decoder feeds the last one (its "first token") and
            # samples from the distribution that follows it.
            state = self.start(batch_size)
            if prompts.size(1) > 1:
                _, state = self(prompts[:, :-1], state)
            if prompts.size(1) > 0:
                first = prompts[:, -1]  # (B,)
            else:
                first = torch.full((batch_size,), self.bos_id, dtype=torch.long, device=prompts.device)
            result = sample_decode(
                self, state, bos_id=first, eos_id=eos_id, pad_id=self.config.pad_id, max_len=length,
                temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
            )  # fmt: skip
        # Rows that ended at eos_id are padded; pad the columns too if every row ended early.
        tokens = F.pad(result.tokens, (0, length - result.tokens.size(1)), value=self.config.pad_id)  # (B, n)
        return tokens.squeeze(0) if single else tokens


# ----------------------------------------------------------------------------------------------------------
# Many-to-one: pooling, encoder, classifier, regressor
# ----------------------------------------------------------------------------------------------------------


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
        valid = _valid_mask(lengths, max_length)  # (B, T)
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
        self.recurrent = _recurrent_layer(config, width, config.bidirectional)
        self.output_size = config.hidden_size * (2 if config.bidirectional else 1)
        self.pooling = Pooling(config.pooling, self.output_size, config.bidirectional)

    def embed(self, inputs: Tensor) -> Tensor:
        """(B, T, E) embeddings of token inputs, or the float inputs checked and passed through."""
        if self.embedding is not None:
            _check_tokens(inputs, self.config.vocab_size, "inputs")
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
        lengths = _check_lengths(lengths, batch_size, max_length, embedded.device)
        outputs, _ = self.recurrent(embedded, lengths=lengths)  # (B, T, D); 0 past each length
        return self.pooling(outputs, lengths)


class SequenceClassifier(_TaskModel):
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
        with _evaluating(self):
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
        with _evaluating(self):
            return self(inputs, lengths)


# ----------------------------------------------------------------------------------------------------------
# Tagging: the linear-chain CRF and the tagger
# ----------------------------------------------------------------------------------------------------------


def _check_prefix_mask(valid: Tensor, emissions: Tensor) -> Tensor:
    """``valid`` (B, T) bool, True on a non-empty prefix of every row (right padding)."""
    if emissions.dim() != 3:
        raise ValueError(f"emissions must have shape (B, T, K), got {tuple(emissions.shape)}")
    if valid is None:
        return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
    if valid.shape != emissions.shape[:2]:
        expected = tuple(emissions.shape[:2])
        raise ValueError(f"valid must have shape (B, T) = {expected}, got {tuple(valid.shape)}")
    valid = valid.to(torch.bool)
    if valid.size(1) and not bool(valid[:, 0].all()):
        raise ValueError("every sequence needs at least one valid step: valid[:, 0] must be True")
    if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
        raise ValueError("valid must be True on a prefix of each row (right padding), found a gap")
    return valid


class CRF(nn.Module):
    r"""Linear-chain conditional random field over K tags (Lafferty et al. 2001), as the output layer of a
    BiLSTM tagger (Huang et al. 2015; Lample et al. 2016).

    The score of a tag sequence y_1..y_n of a sentence with emission scores E (n, K) is

        s(y) = a_start[y_1] + sum_{t=1..n} E[t, y_t] + sum_{t=2..n} A[y_{t-1}, y_t] + a_end[y_n],

    with ``transitions`` A (K, K) (A[i, j]: tag i followed by tag j), ``start_transitions`` a_start (K,) and
    ``end_transitions`` a_end (K,). p(y | x) = exp(s(y)) / Z, Z = sum over all K^n sequences of exp(s(y')),
    computed by the forward algorithm in O(n K^2):

        alpha_1 = a_start + E[1],  alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + E[t, j],
        log Z = logsumexp_j(alpha_n[j] + a_end[j]);

    the best sequence argmax_y s(y) by Viterbi (max instead of logsumexp, with back-pointers).

    Batches are right-padded: ``valid`` (B, T) is True at the real steps (a prefix of each row); past a
    sequence's end alpha is carried unchanged, so each sequence is scored over its own n steps.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        _check_positive_int("num_tags", num_tags)
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small uniform values in [-0.1, 0.1], so no transition is preferred at the start."""
        for parameter in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def _check(self, emissions: Tensor, valid: Tensor | None) -> Tensor:
        valid = _check_prefix_mask(valid, emissions)
        if emissions.size(2) != self.num_tags:
            raise ValueError(f"emissions must have K={self.num_tags} scores a step, got {emissions.size(2)}")
        if emissions.size(1) == 0:
            raise ValueError("emissions must have at least one time step")
        return valid

    def score(self, emissions: Tensor, tags: Tensor, valid: Tensor | None = None) -> Tensor:
        """s(y) of the given tag sequences: emissions (B, T, K), tags (B, T) long, valid (B, T) -> (B,)."""
        valid = self._check(emissions, valid)
        if tags.shape != valid.shape:
            raise ValueError(f"tags must have shape (B, T) = {tuple(valid.shape)}, got {tuple(tags.shape)}")
        tags = tags.long().masked_fill(~valid, 0)  # padding tags are ignored; any in-range id will do
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T) E[t, y_t]
        transition = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1) A[y_{t-1}, y_t]
        total = (emitted * valid).sum(dim=1) + (transition * valid[:, 1:]).sum(dim=1)  # (B,)
        lengths = valid.sum(dim=1)  # (B,)
        last_tags = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,) y_n
        return total + self.start_transitions[tags[:, 0]] + self.end_transitions[last_tags]

    def log_partition(self, emissions: Tensor, valid: Tensor | None = None) -> Tensor:
        """log Z of each sequence by the forward algorithm: emissions (B, T, K), valid (B, T) -> (B,)."""
        valid = self._check(emissions, valid)
        alpha = self.start_transitions + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            # alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + E[t, j]
            extended = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1)  # (B, K)
            extended = extended + emissions[:, t]
            alpha = torch.where(valid[:, t].unsqueeze(1), extended, alpha)  # padding: carry alpha unchanged
        return torch.logsumexp(alpha + self.end_transitions, dim=1)  # (B,)

    def log_likelihood(self, emissions: Tensor, tags: Tensor, valid: Tensor | None = None) -> Tensor:
        """log p(y | x) = s(y) - log Z for each sequence, (B,)."""
        return self.score(emissions, tags, valid) - self.log_partition(emissions, valid)

    def forward(
        self, emissions: Tensor, tags: Tensor, valid: Tensor | None = None, reduction: str = "mean"
    ) -> Tensor:
        """-log p(y | x), the negative log-likelihood: "mean" / "sum" over the batch, or "none" (B,)."""
        nll = -self.log_likelihood(emissions, tags, valid)  # (B,)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    @torch.no_grad()
    def viterbi(self, emissions: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The best tag sequences and their scores s(y*).

        Returns ``(tags (B, T) long, 0 past each sequence's end; scores (B,))``.
        """
        valid = self._check(emissions, valid)
        batch_size, max_length, num_tags = emissions.shape
        identity = torch.arange(num_tags, device=emissions.device).expand(batch_size, num_tags)  # (B, K)
        delta = self.start_transitions + emissions[:, 0]  # (B, K) best score of a path ending in each tag
        back_pointers = []
        for t in range(1, max_length):
            # delta_t[j] = max_i(delta_{t-1}[i] + A[i, j]) + E[t, j]; psi_t[j] = the argmax i.
            best, best_previous = (delta.unsqueeze(2) + self.transitions).max(dim=1)  # (B, K) each
            step_valid = valid[:, t].unsqueeze(1)  # (B, 1)
            delta = torch.where(step_valid, best + emissions[:, t], delta)
            # Past the end the pointer is the identity, so backtracking passes through padding unchanged.
            back_pointers.append(torch.where(step_valid, best_previous, identity))
        scores, last = (delta + self.end_transitions).max(dim=1)  # (B,), (B,)
        path = [last]
        for pointers in reversed(back_pointers):
            path.append(pointers.gather(1, path[-1].unsqueeze(1)).squeeze(1))
        tags = torch.stack(path[::-1], dim=1)  # (B, T)
        return tags.masked_fill(~valid, 0), scores

    def decode(self, emissions: Tensor, valid: Tensor | None = None) -> list[list[int]]:
        """The best tag sequence of each sentence, as a list of its n tag ids."""
        valid = self._check(emissions, valid)
        tags, _ = self.viterbi(emissions, valid)
        lengths = valid.sum(dim=1).tolist()
        return [row[:n] for row, n in zip(tags.tolist(), lengths, strict=True)]

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"


class SequenceTagger(_TaskModel):
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
        self.recurrent = _recurrent_layer(config, config.embedding_size, config.bidirectional)
        self.dropout = nn.Dropout(config.dropout)
        width = config.hidden_size * (2 if config.bidirectional else 1)
        self.emissions = nn.Linear(width, config.num_tags)
        self.crf = CRF(config.num_tags) if config.crf else None

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Emission scores (B, T, K) of tokens (B, T) with lengths (B,)."""
        _check_tokens(tokens, self.config.vocab_size)
        batch_size, max_length = tokens.shape
        lengths = _check_lengths(lengths, batch_size, max_length, tokens.device)
        embedded = self.dropout(self.embedding(tokens))  # (B, T, E)
        outputs, _ = self.recurrent(embedded, lengths=lengths)  # (B, T, D)
        return self.emissions(self.dropout(outputs))  # (B, T, K)

    def loss(self, emissions: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Mean over sentences of the CRF negative log-likelihood, or mean token cross-entropy without a CRF;
        positions past each length are ignored."""
        batch_size, max_length = emissions.shape[:2]
        if tags.shape != (batch_size, max_length):
            raise ValueError(f"tags must have shape {(batch_size, max_length)}, got {tuple(tags.shape)}")
        lengths = _check_lengths(lengths, batch_size, max_length, emissions.device)
        valid = _valid_mask(lengths, max_length)  # (B, T)
        if self.crf is not None:
            return self.crf(emissions, tags, valid, reduction="mean")
        return F.cross_entropy(emissions[valid], tags[valid].long())

    @torch.no_grad()
    def decode(self, tokens: Tensor, lengths: Tensor | None = None) -> list[list[int]]:
        """Tag ids of each sentence: Viterbi with a CRF, else per-token argmax (in evaluation mode)."""
        with _evaluating(self):
            emissions = self(tokens, lengths)  # (B, T, K)
        batch_size, max_length = tokens.shape
        lengths = _check_lengths(lengths, batch_size, max_length, tokens.device)
        if self.crf is not None:
            return self.crf.decode(emissions, _valid_mask(lengths, max_length))
        best = emissions.argmax(dim=-1).tolist()  # (B, T)
        return [row[:n] for row, n in zip(best, lengths.tolist(), strict=True)]


# ----------------------------------------------------------------------------------------------------------
# Forecasting
# ----------------------------------------------------------------------------------------------------------


def make_windows(series, input_len: int, horizon: int, stride: int = 1) -> tuple[Tensor, Tensor]:
    """Slide a window over a 1-D series: inputs (N, input_len), and the ``horizon`` next values (N, horizon).

    Window n covers series[n*stride : n*stride + input_len], its targets the next ``horizon`` values.
    """
    _check_positive_int("input_len", input_len)
    _check_positive_int("horizon", horizon)
    _check_positive_int("stride", stride)
    values = series if isinstance(series, Tensor) else torch.as_tensor(np.asarray(series, dtype=np.float32))
    if values.dim() != 1:
        raise ValueError(f"series must be 1-D (one value per time step), got shape {tuple(values.shape)}")
    span = input_len + horizon
    if values.numel() < span:
        raise ValueError(f"a series of {values.numel()} values is shorter than input_len + horizon = {span}")
    windows = values.unfold(0, span, stride)  # (N, input_len + horizon)
    return windows[:, :input_len].contiguous(), windows[:, input_len:].contiguous()


class Forecaster(_TaskModel):
    """Direct multi-step forecasting of a univariate series (Ben Taieb et al. 2012, the "MIMO" strategy):
    the last ``input_len`` values z_{t-n+1..t} -> recurrent encoder -> linear -> z_{t+1..t+horizon} at once.

    The network works in standardised units z = (y - mean) / std; the :class:`StandardScaler` lives in the
    config (so it is saved with the model) and is fitted on the training part only (:meth:`fit_scaler`).
    :meth:`forward` maps standardised windows to standardised forecasts (for training);
    :meth:`predict` maps raw windows to raw forecasts.

    Example::

        model = Forecaster(ForecasterConfig(input_len=24, horizon=6, hidden_size=32))
        model.fit_scaler(train_series)
        inputs, targets = make_windows(model.config.scaler.transform(train_series), 24, 6)
        loss = F.mse_loss(model(inputs), targets)
        forecast = model.predict(recent_values)        # (B, 6) in the series' own units
    """

    task = "forecast"
    config_class = ForecasterConfig

    def __init__(self, config: ForecasterConfig | dict[str, Any]) -> None:
        super().__init__(config)
        config = self.config
        encoder_config = SequenceEncoderConfig(
            cell=config.cell, hidden_size=config.hidden_size, num_layers=config.num_layers,
            dropout=config.dropout, layer_norm=config.layer_norm, input_size=1, bidirectional=False,
            pooling="last",
        )  # fmt: skip
        self.encoder = SequenceEncoder(encoder_config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.horizon)

    @property
    def scaler(self) -> StandardScaler:
        return self.config.scaler

    def fit_scaler(self, train_series) -> StandardScaler:
        """Fit the scaler on the training part of the series (never on validation or test values)."""
        self.config.scaler = StandardScaler.fit(train_series)
        return self.config.scaler

    def _check_windows(self, windows: Tensor) -> Tensor:
        if not isinstance(windows, Tensor):
            windows = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        if windows.dim() == 3 and windows.size(2) == 1:
            windows = windows.squeeze(2)
        if windows.dim() != 2 or windows.size(1) != self.config.input_len:
            raise ValueError(
                f"windows must have shape (B, input_len={self.config.input_len}), got {tuple(windows.shape)}"
            )
        return windows.to(self.head.weight.dtype)

    def forward(self, windows: Tensor) -> Tensor:
        """Standardised windows (B, input_len) or (B, input_len, 1) -> standardised forecasts (B, horizon)."""
        windows = self._check_windows(windows)
        features, _ = self.encoder(windows.unsqueeze(2))  # (B, H): the state after the last value
        return self.head(self.dropout(features))  # (B, horizon)

    @torch.no_grad()
    def predict(self, windows) -> Tensor:
        """Raw windows (B, input_len), or one (input_len,), -> raw forecasts (B, horizon), or (horizon,)."""
        if not isinstance(windows, Tensor):
            windows = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        single = windows.dim() == 1
        windows = self._check_windows(windows.unsqueeze(0) if single else windows)  # (B, input_len)
        with _evaluating(self):
            forecast = self.scaler.inverse_transform(self(self.scaler.transform(windows)))  # (B, horizon)
        return forecast.squeeze(0) if single else forecast


# ----------------------------------------------------------------------------------------------------------
# Factory
# ----------------------------------------------------------------------------------------------------------

TASKS: dict[str, type[_TaskModel]] = {
    "lm": LanguageModel,
    "classify": SequenceClassifier,
    "regress": SequenceRegressor,
    "tag": SequenceTagger,
    "forecast": Forecaster,
}


def build_model(task: str, config: dict[str, Any] | RecurrentConfig) -> nn.Module:
    """The model of a task ("lm", "classify", "regress", "tag", "forecast") from its config dict.

    Unknown tasks, cells, poolings and config keys raise ValueError naming what is allowed.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task].from_config(config)
