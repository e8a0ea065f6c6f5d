r"""The recurrent language model: embedding -> recurrent layer -> dropout -> linear over the vocabulary.

It carries its state across chunks (truncated BPTT) and implements the decoder step of DESIGN section 3, so
:mod:`rnnkit.decoding` generates text from it.

Example::

    model = LanguageModel(LanguageModelConfig(vocab_size=100, hidden_size=64, embedding_size=64,
                                              tie_weights=True))
    logits, state = model(tokens)                      # (B, T, V)
    logits, state = model(next_tokens, LanguageModel.detach_state(state))   # next chunk, truncated BPTT
    continuation = model.generate(prompt_ids, 50, temperature=0.8, top_k=10, generator=torch.Generator())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.checks import check_bool, check_lengths, check_size
from rnnkit.decoding import sample_decode
from rnnkit.models.base import (
    RecurrentConfig,
    TaskModel,
    check_tokens,
    evaluating,
    recurrent_layer,
)
from rnnkit.state import detach_state

__all__ = ["LanguageModelConfig", "LanguageModel"]


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
        check_size("vocab_size", self.vocab_size)
        check_size("embedding_size", self.embedding_size)
        check_bool("tie_weights", self.tie_weights)
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(
                "tie_weights shares the embedding matrix (V, E) with the output layer (V, H), so it needs "
                f"embedding_size == hidden_size, got {self.embedding_size} and {self.hidden_size}"
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


class LanguageModel(TaskModel):
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
        self.recurrent = recurrent_layer(config, config.embedding_size, bidirectional=False)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.output.weight = self.embedding.weight  # one (V, E) matrix, E == H

    def start(self, batch_size: int, device: torch.device | None = None) -> dict[str, Tensor]:
        """The initial (zero) state of ``batch_size`` sequences: ``{"h": (B, L, H)[, "c": (B, L, H)]}``."""
        check_size("batch_size", batch_size)
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
        return None if state is None else detach_state(state)

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
        check_tokens(tokens, self.config.vocab_size)
        batch_size, max_length = tokens.shape
        hidden = None
        if state is not None:
            self._check_state(state, batch_size)
            hidden = _state_to_layer(state, self.config.cell)
        if lengths is not None:
            lengths = check_lengths(lengths, batch_size, max_length, torch.device("cpu"))
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
        device = self.output.weight.device
        if isinstance(prompt_ids, Tensor):
            prompt_ids = prompt_ids.to(device)
        else:  # a list of ids (possibly empty)
            prompt_ids = torch.as_tensor(prompt_ids, dtype=torch.long, device=device)
        single = prompt_ids.dim() == 1
        prompts = prompt_ids.unsqueeze(0) if single else prompt_ids  # (B, P)
        check_tokens(prompts, self.config.vocab_size, "prompt_ids")
        check_size("length", length)
        with evaluating(self):  # no dropout while sampling
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

