"""What every task model shares: the recurrent part of its config, construction from a config, the recurrent
layer a config names, and the checks of the inputs every model takes (token ids, lengths).

A model's config is a dataclass (``model.config``, JSON-serialisable with ``config.to_dict()``, rebuilt with
``Model.from_config(dict_or_config)``) whose recurrent part is :class:`RecurrentConfig`: ``cell`` = "lstm" |
"gru" | "rnn" (``layer_norm`` for lstm/gru), ``num_layers``, ``hidden_size``, ``dropout``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnkit.checks import check_bool, check_lengths, check_probability, check_size
from rnnkit.layers import GRU, LSTM, RNN

__all__ = [
    "CELLS",
    "RecurrentConfig",
    "TaskModel",
    "recurrent_layer",
    "check_tokens",
    "lengths_or_full",
    "evaluating",
]

CELLS = ("lstm", "gru", "rnn")
_LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


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
        check_size("hidden_size", self.hidden_size)
        check_size("num_layers", self.num_layers)
        check_probability("dropout", self.dropout)
        check_bool("layer_norm", self.layer_norm)
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


class TaskModel(nn.Module):
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


def recurrent_layer(config: RecurrentConfig, input_size: int, bidirectional: bool) -> nn.Module:
    """The rnnkit layer a config names, batch-first; dropout acts between its layers only."""
    layer_class = _LAYERS[config.cell]
    extras = {"layer_norm": True} if config.layer_norm else {}
    inner_dropout = config.dropout if config.num_layers > 1 else 0.0  # rnnkit warns on dropout with 1 layer
    return layer_class(
        input_size, config.hidden_size, num_layers=config.num_layers, batch_first=True, dropout=inner_dropout,
        bidirectional=bidirectional, **extras,
    )  # fmt: skip


def check_tokens(tokens: Tensor, vocab_size: int, name: str = "tokens") -> None:
    """ValueError unless ``tokens`` is an integer tensor (B, T) of ids in [0, vocab_size)."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point:
        given = f"shape {tuple(tokens.shape)}, {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens)
        raise ValueError(f"{name} must be an integer tensor (B, T) of token ids, got {given}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(
            f"{name} must be ids in [0, vocab_size={vocab_size}), got values in "
            f"[{int(tokens.min())}, {int(tokens.max())}]"
        )


def lengths_or_full(lengths: object, batch_size: int, max_length: int, device: torch.device) -> Tensor:
    """``lengths`` as an int64 tensor (B,) with values in [1, T] (see :func:`rnnkit.checks.check_lengths`);
    None means every sequence is full length."""
    if lengths is None:
        return torch.full((batch_size,), max_length, dtype=torch.long, device=device)
    return check_lengths(lengths, batch_size, max_length, device)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) inside the block, then the caller's mode back.

    Example::

        with evaluating(model):
            predictions = model(inputs)
    """
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
