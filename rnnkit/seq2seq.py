"""Encoder-decoder models: :class:`Encoder`, the decoders, :class:`Seq2Seq`.

Reading order: token conventions, the encoder (with its bridge to the decoder), the three decoders
(Bahdanau-style attention, Luong-style attention, no attention), and the model that joins them. The
scheduled-sampling schedules live in :mod:`rnnkit.teacher_forcing` (re-exported here).

* :class:`Encoder`: embedding + ``rnnkit.layers`` LSTM/GRU (bidirectional by default) over a padded batch;
  h̄_s = [→h_s; ←h_s] are the attention keys; a bridge s_0 = tanh(W_b [final states] + b_b) gives the decoder
  its initial state (Bahdanau et al. 2014, appendix A.2.2 uses the backward state alone).
* :class:`BahdanauDecoder` (Bahdanau et al. 2014): attention from the *previous* state s_{i-1}, context fed
  into the RNN input and into the output layer.
* :class:`LuongDecoder` (Luong et al. 2015): RNN first, then attention from h_t, attentional state
  h~_t = tanh(W_c [c_t; h_t]), optional input feeding (h~_{t-1} joins the next input).
* :class:`PlainDecoder` (Cho et al. 2014): no attention; one fixed context c (the encoder summary) at every
  step, for comparison.
* :class:`Seq2Seq`: ``forward`` for training (teacher forcing ratio, scheduled sampling) and the decoding
  step interface shared with ``rnnkit.decoding``::

      state = model.start(src, src_lengths)
      log_probs, state = model.step(prev_tokens, state)          # (N, V)

  ``state`` is a dict of tensors that all have the batch as dim 0, so a decoder can expand it per beam and
  reorder it with ``t.index_select(0, idx)`` without knowing what is inside:

  ===============  =============  ====================================================================
  key              shape          meaning
  ===============  =============  ====================================================================
  ``hidden``       (N, L, H)      decoder hidden state of each layer (transposed from torch's (L, N, H))
  ``cell``         (N, L, H)      LSTM cell state (LSTM decoders only)
  ``keys``         (N, S, K)      encoder outputs h̄_s (attention decoders)
  ``keys_proj``    (N, S, A)      precomputed key part of the attention score (additive/concat only)
  ``valid``        (N, S) bool    True at real source positions
  ``step``         (N,) long      index t of the next target position (local-m attention uses it)
  ``feed``         (N, H)         h~_{t-1} for input feeding (Luong with ``input_feeding``)
  ``context``      (N, K)         fixed context c (no-attention decoder)
  ``attention``    (N, S)         the last step's attention weights (attention decoders; 0 before step 1)
  ``coverage``     (N, S)         the sum of all previous steps' attention weights (coverage attention)
  ``source``       (N, S) long    the source token ids (copy attention)
  ===============  =============  ====================================================================

Token ids follow the rnnkit convention: pad = 0, unk = 1, bos = 2, eos = 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import layers
from rnnkit.attention import Attention, make_attention
from rnnkit.checks import check_bool, check_probability, check_size
from rnnkit.losses import linear_cross_entropy
from rnnkit.teacher_forcing import (  # re-exported: their home before rnnkit.teacher_forcing
    ConstantSchedule,
    ExponentialSchedule,
    InverseSigmoidSchedule,
    LinearSchedule,
    TeacherForcingSchedule,
    make_schedule,
)

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "EncoderOutput",
    "Encoder",
    "Decoder",
    "BahdanauDecoder",
    "LuongDecoder",
    "PlainDecoder",
    "DECODER_STYLES",
    "Seq2SeqConfig",
    "Seq2Seq",
    "TeacherForcingSchedule",
    "ConstantSchedule",
    "LinearSchedule",
    "ExponentialSchedule",
    "InverseSigmoidSchedule",
    "make_schedule",
]

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

_RNNS = {"lstm": layers.LSTM, "gru": layers.GRU}

State = dict[str, Tensor]


def _check_cell(cell: str) -> str:
    if not isinstance(cell, str) or cell.lower() not in _RNNS:
        raise ValueError(f"cell must be one of {sorted(_RNNS)}, got {cell!r}")
    return cell.lower()


def _make_rnn(
    cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, bidirectional: bool = False
) -> nn.Module:
    """A batch-first ``rnnkit.layers`` LSTM or GRU (dropout only between layers, as in torch)."""
    return _RNNS[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


# --------------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------------


class EncoderOutput(NamedTuple):
    """What the encoder hands the decoder.

    outputs (B, S, K): h̄_s, zero past each length; valid (B, S) bool; hidden (B, L_dec, H_dec) and
    cell (B, L_dec, H_dec) or None: the decoder's initial state from the bridge; summary (B, K): a fixed-size
    summary of the source for decoders without attention; source (B, S) long: the source token ids (copy
    attention copies them).
    """

    outputs: Tensor
    valid: Tensor
    hidden: Tensor
    cell: Tensor | None
    summary: Tensor
    source: Tensor | None = None


class Encoder(nn.Module):
    """Embedding + a (by default bidirectional) LSTM/GRU over a padded source batch, and the bridge.

    For a bidirectional encoder each source position gets h̄_s = [→h_s; ←h_s] (Bahdanau et al. 2014, sec. 3.2),
    so K = 2H features; the backward direction starts at each sentence's own last token (``lengths=``).

    Bridge: the final states of every encoder layer and direction, concatenated, give the decoder's initial
    state through one linear layer and tanh::

        s_0 = tanh(W_b [h_n^(1, fwd); h_n^(1, bwd); ...; h_n^(L, bwd)] + b_b)       reshaped to (L_dec, H_dec)

    (Bahdanau et al. 2014, A.2.2 use s_0 = tanh(W_s ←h_1); using both directions lets the decoder start from
    both ends of the source). For an LSTM decoder the cell state gets its own bridge from the encoder's final
    cell states (zeros if the encoder is a GRU).

    ``summary`` ("final": the top layer's final states [→h_S; ←h_1], or "mean": the mean of h̄_s over the
    valid positions) is the fixed context of a decoder without attention.

    Args:
        vocab_size, embedding_size: source vocabulary size and embedding width.
        hidden_size: H, per direction. num_layers: stacked layers. cell: "lstm" or "gru".
        bidirectional: run a backward direction too (default True). dropout: on the embeddings and between
            layers. output_dropout: on the outputs h̄_s the decoder attends over (the keys and values of its
            attention; not on the bridge or the summary), as fairseq's LSTM encoder does. decoder_hidden_size,
            decoder_layers, decoder_cell: the shape of the state the bridge makes (default: H * directions,
            num_layers, cell). summary: "final" or "mean". pad_id: padding token.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.0,
        output_dropout: float = 0.0,
        decoder_hidden_size: int | None = None,
        decoder_layers: int | None = None,
        decoder_cell: str | None = None,
        summary: str = "final",
        pad_id: int = PAD_ID,
    ) -> None:
        super().__init__()
        self.cell = _check_cell(cell)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        self.output_size = self.num_directions * self.hidden_size  # K
        self.decoder_hidden_size = check_size("decoder_hidden_size", decoder_hidden_size or self.output_size)
        self.decoder_layers = check_size("decoder_layers", decoder_layers or self.num_layers)
        self.decoder_cell = _check_cell(decoder_cell or self.cell)
        if summary not in ("final", "mean"):
            raise ValueError(f"summary must be 'final' or 'mean', got {summary!r}")
        self.summary = summary
        self.pad_id = pad_id
        self.embedding = nn.Embedding(
            check_size("vocab_size", vocab_size),
            check_size("embedding_size", embedding_size),
            padding_idx=pad_id,
        )
        self.dropout = nn.Dropout(check_probability("dropout", dropout))
        self.output_dropout = nn.Dropout(check_probability("output_dropout", output_dropout))
        self.rnn = _make_rnn(self.cell, embedding_size, hidden_size, num_layers, dropout, self.bidirectional)
        finals = self.num_layers * self.num_directions * self.hidden_size
        bridged = self.decoder_layers * self.decoder_hidden_size
        self.bridge = nn.Linear(finals, bridged)  # W_b, b_b
        self.cell_bridge = nn.Linear(finals, bridged) if self.decoder_cell == "lstm" else None

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """Encode ``src`` (B, S) long with ``src_lengths`` (B,); see :class:`EncoderOutput`."""
        batch_size, source_length = src.shape
        positions = torch.arange(source_length, device=src.device)
        valid = positions < src_lengths.to(src.device).unsqueeze(1)  # (B, S)
        embedded = self.dropout(self.embedding(src))  # (B, S, E)
        outputs, final = self.rnn(embedded, lengths=src_lengths.cpu())  # (B, S, K), zero past each length
        final_hidden, final_cell = final if self.cell == "lstm" else (final, None)  # (L * D, B, H) each

        def bridge(linear: nn.Linear, states: Tensor) -> Tensor:
            flat = states.transpose(0, 1).reshape(batch_size, -1)  # (B, L * D * H)
            return torch.tanh(linear(flat)).view(batch_size, self.decoder_layers, self.decoder_hidden_size)

        hidden = bridge(self.bridge, final_hidden)  # (B, L_dec, H_dec)
        cell = None
        if self.cell_bridge is not None:
            cell = bridge(
                self.cell_bridge, final_cell if final_cell is not None else torch.zeros_like(final_hidden)
            )
        if self.summary == "final":
            top = final_hidden[-self.num_directions :]  # the top layer's directions: (D, B, H)
            summary = top.transpose(0, 1).reshape(batch_size, self.output_size)  # [→h_S; ←h_1]: (B, K)
        else:
            summary = outputs.sum(1) / src_lengths.to(outputs.device, outputs.dtype).unsqueeze(1)  # (B, K)
        # dropout keeps the zeros past each length
        return EncoderOutput(self.output_dropout(outputs), valid, hidden, cell, summary, src)


# --------------------------------------------------------------------------------------------------------
# Decoders
# --------------------------------------------------------------------------------------------------------


class Decoder(nn.Module):
    """What the decoders share: embedding, RNN, the state dict, and the step contract.

    Subclasses define ``_rnn_input_size``, ``init_state`` extras and ``step``; a decoder that can run all
    target steps at once under full teacher forcing sets ``supports_parallel`` and defines
    ``forward_parallel``. ``step`` returns unnormalised logits (N, V) (with copy attention, the log-probabilities
    of the pointer-generator mixture: logits that are already normalised); :class:`Seq2Seq` turns them into
    log-probabilities.
    """

    has_attention: bool = False

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        context_size: int,
        *,
        num_layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        pad_id: int = PAD_ID,
    ) -> None:
        super().__init__()
        self.vocab_size = check_size("vocab_size", vocab_size)
        self.embedding_size = check_size("embedding_size", embedding_size)
        self.hidden_size = check_size("hidden_size", hidden_size)  # H
        self.context_size = check_size("context_size", context_size)  # K, features of h̄_s
        self.num_layers = check_size("num_layers", num_layers)
        self.cell = _check_cell(cell)
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(check_probability("dropout", dropout))
        self.rnn = _make_rnn(self.cell, self._rnn_input_size(), hidden_size, num_layers, dropout)
        self.pointer: nn.Module | None = None  # copy attention's pointer-generator (attention decoders only)

    @property
    def supports_parallel(self) -> bool:
        """True if ``forward_parallel`` can run every target step in one call under full teacher forcing."""
        return False

    @property
    def output_layer(self) -> nn.Linear:
        """The last linear layer, whose (V, in) weight gives each target token's logit."""
        raise NotImplementedError

    def tie_weights(self) -> None:
        """Use the target embedding matrix (V, E) as the output layer's weight: one matrix, trained by both
        uses (Press & Wolf 2017; Inan et al. 2017). Needs the output layer's input size to be E."""
        output = self.output_layer
        if output.in_features != self.embedding_size:
            raise ValueError(
                "tie_weights shares the embedding matrix (V, E) with the output layer (V, H), so it needs "
                f"embedding_size == hidden_size, got {self.embedding_size} and {output.in_features}"
            )
        output.weight = self.embedding.weight

    def _rnn_input_size(self) -> int:
        raise NotImplementedError

    def init_state(self, encoded: EncoderOutput) -> State:
        """The state before the first step (every tensor batch-first)."""
        batch_size = encoded.outputs.shape[0]
        state = {
            "hidden": encoded.hidden,
            "step": torch.zeros(batch_size, dtype=torch.long, device=encoded.outputs.device),
        }
        if self.cell == "lstm":
            state["cell"] = encoded.cell
        return state

    def step(self, prev_tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """One decoder step: logits (N, V) for the next token and the new state (the old one is unchanged)."""
        raise NotImplementedError

    def forward_parallel(self, tgt_in: Tensor, state: State) -> tuple[Tensor, Tensor | None]:
        """All T steps at once, inputs ``tgt_in`` (B, T): logits (B, T, V) and attention (B, T, S) or None."""
        features, attention, copy_inputs = self._parallel(tgt_in, state)
        logits = self.output_layer(features)  # (B, T, V): one product for all steps
        if self.pointer is not None:  # log P of the pointer-generator mixture
            logits = self.pointer(logits, attention, *copy_inputs)
        return logits, attention

    def parallel_features(self, tgt_in: Tensor, state: State) -> tuple[Tensor, Tensor | None]:
        """What :meth:`forward_parallel` feeds its output layer, (B, T, F), and the attention: logits =
        ``output_layer(features)``. A decoder with copy attention has no such features (its output mixes the
        output layer's distribution with the attention's), so it raises."""
        if self.pointer is not None:
            raise ValueError("with copy attention the output is a mixture, not the output layer's logits")
        features, attention, _ = self._parallel(tgt_in, state)
        return features, attention

    def _parallel(self, tgt_in: Tensor, state: State) -> tuple[Tensor, Tensor | None, tuple]:
        """Under full teacher forcing, all T steps: the output layer's input (B, T, F), the attention
        (B, T, S) or None, and the pointer-generator's other inputs (source ids, contexts, RNN outputs, input
        embeddings) after the logits and weights."""
        raise NotImplementedError(f"{type(self).__name__} decodes step by step only")

    # -- helpers shared by the subclasses -----------------------------------------------------------------
    def _recurrent_state(self, state: State):
        """The state as torch's RNNs take it: (L, N, H), a pair of them for an LSTM."""
        hidden = state["hidden"].transpose(0, 1).contiguous()  # (N, L, H) -> (L, N, H)
        if self.cell == "lstm":
            return hidden, state["cell"].transpose(0, 1).contiguous()
        return hidden

    def _run_rnn(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        """Run the RNN over inputs (N, T, D) from ``state``: outputs (N, T, H) and the new state entries."""
        outputs, final = self.rnn(inputs, self._recurrent_state(state))  # (N, T, H)
        if self.cell == "lstm":
            return outputs, {
                "hidden": final[0].transpose(0, 1),
                "cell": final[1].transpose(0, 1),
            }  # (N, L, H)
        return outputs, {"hidden": final.transpose(0, 1)}


def _attend(attention: Attention, query: Tensor, state: State) -> tuple[Tensor, Tensor, State]:
    """One step of attention over the keys in ``state`` (with their precomputed projection, if any):
    context (N, K), weights (N, S), and the state entries it updates (the weights, the coverage)."""
    keys, valid, projected = state["keys"], state["valid"], state.get("keys_proj")
    coverage = state.get("coverage")  # C_t = sum of the previous weights (coverage attention only)
    context, weights = attention(query, keys, valid, precomputed=projected, step=state["step"], coverage=coverage)
    updates = {"attention": weights}
    if coverage is not None:
        updates["coverage"] = coverage + weights  # C_{t+1}
    return context, weights, updates


def _attention_state(attention: Attention, encoded: EncoderOutput, pointer: nn.Module | None) -> State:
    """The state entries an attention decoder needs: keys, their precomputed projection, valid, weights and,
    for coverage attention, the coverage; for copy attention, the source ids."""
    state = {
        "keys": encoded.outputs,
        "valid": encoded.valid,
        "attention": encoded.outputs.new_zeros(encoded.valid.shape),
    }  # (N, S) before the first step
    projected = attention.precompute(encoded.outputs)
    if projected is not None:
        state["keys_proj"] = projected  # (N, S, A), once per source sentence
    if attention.coverage:
        state["coverage"] = encoded.outputs.new_zeros(encoded.valid.shape)  # C_0 = 0: (N, S)
    if pointer is not None:
        state["source"] = encoded.source  # (N, S) long
    return state


class _DeepOutput(nn.Module):
    """Output layer fed with the state, the context and the previous word (Bahdanau et al. 2014, A.2.2)::

        t_i = tanh(W_r [s_i; c_i; E y_{i-1}] + b_r)         logits_i = W_o t_i + b_o

    (the paper takes s_{i-1} and a maxout; s_i and tanh are the common simplification, e.g. in Nematus).
    """

    def __init__(
        self, hidden_size: int, context_size: int, embedding_size: int, vocab_size: int, dropout: nn.Module
    ) -> None:
        super().__init__()
        self.readout = nn.Linear(hidden_size + context_size + embedding_size, hidden_size)  # W_r
        self.output = nn.Linear(hidden_size, vocab_size)  # W_o
        self.dropout = dropout

    def features(self, state: Tensor, context: Tensor, embedded: Tensor) -> Tensor:
        """t_i after dropout, the output layer's input: (..., H)."""
        return self.dropout(torch.tanh(self.readout(torch.cat([state, context, embedded], dim=-1))))

    def forward(self, state: Tensor, context: Tensor, embedded: Tensor) -> Tensor:
        return self.output(self.features(state, context, embedded))  # (..., V)


class PointerGenerator(nn.Module):
    """Copy attention, the pointer-generator of See et al. 2017 (section 2.2), over a shared vocabulary.

    At each target step a switch decides between generating from the vocabulary and copying a source token
    through the attention weights a_t (the decoder's own attention)::

        p_gen = sigmoid(w_c^T c_t + w_s^T s_t + w_x^T x_t + b_ptr)                   (eq. 8)
        P(w)  = p_gen P_vocab(w) + (1 - p_gen) sum_{s : x_s = w} a_t(s)             (eq. 9)

    c_t the context vector, s_t the decoder's RNN output, x_t its input embedding, P_vocab = softmax(logits).
    Source and target share one vocabulary (the same token ids on both sides), so copying source position s
    means emitting its id x_s; See et al.'s extended vocabulary for source words outside the vocabulary is not
    implemented, so an unknown source word is copied as UNK. ``forward`` returns log P, floored at the smallest
    normal float so that a token of probability 0 gets a finite log-probability and no NaN gradient.
    """

    def __init__(self, context_size: int, state_size: int, input_size: int) -> None:
        super().__init__()
        self.switch = nn.Linear(context_size + state_size + input_size, 1)  # w_c, w_s, w_x, b_ptr

    def forward(
        self, logits: Tensor, weights: Tensor, source: Tensor, context: Tensor, state: Tensor, inputs: Tensor
    ) -> Tensor:
        """log P (..., V) from logits (..., V), weights (..., S), source (B, S) ids, context (..., K),
        state (..., H), inputs (..., E); ``...`` is (B,) for one step or (B, T) for all steps at once."""
        p_gen = torch.sigmoid(self.switch(torch.cat([context, state, inputs], dim=-1)))  # (..., 1)
        generated = p_gen * torch.softmax(logits, dim=-1)  # (..., V)
        source_ids = source if weights.dim() == 2 else source.unsqueeze(1).expand_as(weights)  # (..., S)
        mixed = generated.scatter_add(-1, source_ids, (1.0 - p_gen) * weights)  # + copy mass on each x_s
        return mixed.clamp_min(torch.finfo(mixed.dtype).tiny).log()


class BahdanauDecoder(Decoder):
    """Decoder with attention from the previous state (Bahdanau et al. 2014, appendix A.2.2).

    At target step i, with y_{i-1} the previous token and s_{i-1} the previous top-layer state::

        a_i = attention(s_{i-1}, h̄)          c_i = sum_s a_i(s) h̄_s          (additive by default)
        s_i = RNN([E y_{i-1}; c_i], s_{i-1})
        t_i = tanh(W_r [s_i; c_i; E y_{i-1}])   logits_i = W_o t_i

    Attention depends on s_{i-1}, so the steps run one after another even under teacher forcing; there
    ``forward_parallel`` steps only the attention and the RNN, and computes the deep output and the logits of all
    T steps as one product each (the tests check it equals the step loop).
    """

    has_attention = True

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        context_size: int,
        *,
        attention: str = "additive",
        attention_options: dict | None = None,
        copy_attention: bool = False,
        **options,
    ) -> None:
        super().__init__(vocab_size, embedding_size, hidden_size, context_size, **options)
        self.attention = make_attention(attention, hidden_size, context_size, **(attention_options or {}))
        self.deep_output = _DeepOutput(hidden_size, context_size, embedding_size, vocab_size, self.dropout)
        self.pointer = PointerGenerator(context_size, hidden_size, embedding_size) if copy_attention else None

    @property
    def output_layer(self) -> nn.Linear:
        return self.deep_output.output

    @property
    def supports_parallel(self) -> bool:
        return True  # the recurrence steps inside forward_parallel; the output layer runs once

    def _rnn_input_size(self) -> int:
        return self.embedding_size + self.context_size

    def init_state(self, encoded: EncoderOutput) -> State:
        return {**super().init_state(encoded), **_attention_state(self.attention, encoded, self.pointer)}

    def _recur(self, embedded: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor, State]:
        """One step of the recurrence from E y_{i-1} (N, E), without the output layer: s_i (N, H), c_i (N, K),
        a_i (N, S) and the next state."""
        query = state["hidden"][:, -1]  # s_{i-1}, top layer: (N, H)
        context, weights, attended = _attend(self.attention, query, state)  # c_i: (N, K), a_i: (N, S)
        rnn_input = torch.cat([embedded, context], dim=-1).unsqueeze(1)  # (N, 1, E + K)
        outputs, recurrent = self._run_rnn(rnn_input, state)
        return outputs.squeeze(1), context, weights, {**state, **recurrent, **attended, "step": state["step"] + 1}

    def step(self, prev_tokens: Tensor, state: State) -> tuple[Tensor, State]:
        embedded = self.dropout(self.embedding(prev_tokens))  # E y_{i-1}: (N, E)
        hidden, context, weights, state = self._recur(embedded, state)
        logits = self.deep_output(hidden, context, embedded)  # (N, V)
        if self.pointer is not None:  # log P of the pointer-generator mixture
            logits = self.pointer(logits, weights, state["source"], context, hidden, embedded)
        return logits, state

    def _parallel(self, tgt_in: Tensor, state: State) -> tuple[Tensor, Tensor, tuple]:
        embedded = self.dropout(self.embedding(tgt_in))  # E y_{i-1} for every i: (B, T, E)
        source = state.get("source")
        steps = []
        for inputs in embedded.unbind(1):  # (B, E)
            *values, state = self._recur(inputs, state)
            steps.append(values)
        hidden, context, attention = (torch.stack(x, dim=1) for x in zip(*steps, strict=True))  # s, c, a
        features = self.deep_output.features(hidden, context, embedded)  # (B, T, H)
        return features, attention, (source, context, hidden, embedded)


class LuongDecoder(Decoder):
    """Decoder with attention after the RNN (Luong et al. 2015, section 3), optional input feeding.

    At target step t, with y_{t-1} the previous token::

        h_t  = RNN(x_t, h_{t-1})       x_t = E y_{t-1}, or [E y_{t-1}; h~_{t-1}] with input feeding (sec. 3.3)
        a_t  = attention(h_t, h̄)       c_t = sum_s a_t(s) h̄_s                (general by default)
        h~_t = tanh(W_c [c_t; h_t])                                          (eq. 5: attentional hidden state)
        logits_t = W_s h~_t                                                  (eq. 6)

    Without input feeding (and without coverage attention), h_t does not depend on the attention, so under full
    teacher forcing ``forward_parallel`` runs the RNN over all T steps in one call and the attention for all
    steps as batched matrix products; with them it steps the RNN and the attention, and computes the logits of
    all T steps as one product. The tests check both equal the step loop.
    """

    has_attention = True

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        context_size: int,
        *,
        attention: str = "general",
        attention_options: dict | None = None,
        input_feeding: bool = False,
        copy_attention: bool = False,
        **options,
    ) -> None:
        self.input_feeding = bool(input_feeding)  # set first: the base class sizes the RNN input from it
        super().__init__(vocab_size, embedding_size, hidden_size, context_size, **options)
        self.attention = make_attention(attention, hidden_size, context_size, **(attention_options or {}))
        self.combine = nn.Linear(context_size + hidden_size, hidden_size, bias=False)  # W_c
        self.output = nn.Linear(hidden_size, vocab_size)  # W_s
        self.pointer = PointerGenerator(context_size, hidden_size, embedding_size) if copy_attention else None

    @property
    def output_layer(self) -> nn.Linear:
        return self.output

    @property
    def supports_parallel(self) -> bool:
        return True  # with input feeding or coverage, the recurrence steps inside forward_parallel

    @property
    def _steps_depend_on_attention(self) -> bool:
        return self.input_feeding or self.attention.coverage

    def _rnn_input_size(self) -> int:
        return self.embedding_size + (self.hidden_size if self.input_feeding else 0)

    def init_state(self, encoded: EncoderOutput) -> State:
        state = {**super().init_state(encoded), **_attention_state(self.attention, encoded, self.pointer)}
        if self.input_feeding:
            state["feed"] = encoded.outputs.new_zeros(encoded.outputs.shape[0], self.hidden_size)  # h~_0 = 0
        return state

    def _attentional(self, context: Tensor, hidden: Tensor) -> Tensor:
        # Luong et al. 2015, eq. 5: attentional hidden state h~ = tanh(W_c [c; h])
        return torch.tanh(self.combine(torch.cat([context, hidden], dim=-1)))  # (..., H)

    def _recur(self, embedded: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor, Tensor, State]:
        """One step of the recurrence from the input embedding (N, E), without the output layer: h_t (N, H),
        c_t (N, K), a_t (N, S), h~_t (N, H) and the next state."""
        rnn_input = torch.cat([embedded, state["feed"]], dim=-1) if self.input_feeding else embedded  # (N, E[+H])
        outputs, recurrent = self._run_rnn(rnn_input.unsqueeze(1), state)
        hidden = outputs.squeeze(1)  # h_t: (N, H)
        context, weights, attended = _attend(self.attention, hidden, state)  # c_t: (N, K), a_t: (N, S)
        attentional = self._attentional(context, hidden)  # (N, H)
        new_state = {**state, **recurrent, **attended, "step": state["step"] + 1}
        if self.input_feeding:
            new_state["feed"] = attentional
        return hidden, context, weights, attentional, new_state

    def step(self, prev_tokens: Tensor, state: State) -> tuple[Tensor, State]:
        embedded = self.dropout(self.embedding(prev_tokens))  # (N, E)
        hidden, context, weights, attentional, state = self._recur(embedded, state)
        logits = self.output(self.dropout(attentional))  # (N, V)
        if self.pointer is not None:  # log P of the pointer-generator mixture
            logits = self.pointer(logits, weights, state["source"], context, hidden, embedded)
        return logits, state

    def _parallel(self, tgt_in: Tensor, state: State) -> tuple[Tensor, Tensor, tuple]:
        embedded = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        if self._steps_depend_on_attention:
            hidden, contexts, weights, attentional = self._step_all(embedded, state)
        else:
            hidden, _ = self._run_rnn(embedded, state)  # h_t for every t: (B, T, H)
            steps = state["step"].unsqueeze(1) + torch.arange(tgt_in.shape[1], device=tgt_in.device)  # (B, T)
            contexts, weights = self.attention.attend_all(
                hidden, state["keys"], state["valid"], precomputed=state.get("keys_proj"), steps=steps
            )
            attentional = self._attentional(contexts, hidden)  # (B, T, H)
        return self.dropout(attentional), weights, (state.get("source"), contexts, hidden, embedded)

    def _step_all(self, embedded: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The recurrence of :meth:`step` over inputs (B, T, E), without the output layer: h_t, c_t, a_t and
        h~_t for every t, each stacked on dim 1."""
        steps = []
        for inputs in embedded.unbind(1):  # (B, E)
            *values, state = self._recur(inputs, state)
            steps.append(values)
        return tuple(torch.stack(values, dim=1) for values in zip(*steps, strict=True))


class PlainDecoder(Decoder):
    """Decoder without attention (Cho et al. 2014): one fixed context c, the encoder summary, at every step::

        s_t = RNN([E y_{t-1}; c], s_{t-1})
        t_t = tanh(W_r [s_t; c; E y_{t-1}])     logits_t = W_o t_t

    Everything the decoder knows of the source must pass through c and s_0: the fixed-size bottleneck that
    attention removes (Bahdanau et al. 2014, Fig. 2). Under full teacher forcing all steps run in one call.
    """

    def __init__(
        self, vocab_size: int, embedding_size: int, hidden_size: int, context_size: int, **options
    ) -> None:
        super().__init__(vocab_size, embedding_size, hidden_size, context_size, **options)
        self.deep_output = _DeepOutput(hidden_size, context_size, embedding_size, vocab_size, self.dropout)

    @property
    def output_layer(self) -> nn.Linear:
        return self.deep_output.output

    @property
    def supports_parallel(self) -> bool:
        return True

    def _rnn_input_size(self) -> int:
        return self.embedding_size + self.context_size

    def init_state(self, encoded: EncoderOutput) -> State:
        return {**super().init_state(encoded), "context": encoded.summary}

    def step(self, prev_tokens: Tensor, state: State) -> tuple[Tensor, State]:
        embedded = self.dropout(self.embedding(prev_tokens))  # (N, E)
        context = state["context"]  # (N, K)
        outputs, recurrent = self._run_rnn(torch.cat([embedded, context], dim=-1).unsqueeze(1), state)
        logits = self.deep_output(outputs.squeeze(1), context, embedded)  # (N, V)
        return logits, {**state, **recurrent, "step": state["step"] + 1}

    def _parallel(self, tgt_in: Tensor, state: State) -> tuple[Tensor, None, tuple]:
        embedded = self.dropout(self.embedding(tgt_in))  # (B, T, E)
        context = state["context"].unsqueeze(1).expand(-1, tgt_in.shape[1], -1)  # (B, T, K)
        outputs, _ = self._run_rnn(torch.cat([embedded, context], dim=-1), state)  # (B, T, H)
        return self.deep_output.features(outputs, context, embedded), None, ()


def _check_decoder_inputs(src: Tensor, tgt_in: Tensor) -> None:
    """``tgt_in`` must be a (B, T) integer tensor with the source batch's B."""
    if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0] or tgt_in.is_floating_point():
        raise ValueError(
            f"tgt_in must be a (B, T) integer tensor with B={src.shape[0]}, got {tgt_in.dtype} {tuple(tgt_in.shape)}"
        )


_COVERAGE_ATTENTIONS = ("additive", "concat")  # the scores with a hidden layer that coverage can enter

_DECODERS = {"luong": LuongDecoder, "bahdanau": BahdanauDecoder, "none": PlainDecoder}

#: Decoder styles accepted by :class:`Seq2SeqConfig`.
DECODER_STYLES: tuple[str, ...] = tuple(_DECODERS)


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------


@dataclass
class Seq2SeqConfig:
    """Everything :meth:`Seq2Seq.build` needs; JSON-friendly (``asdict(config)``, ``Seq2SeqConfig(**d)``).

    ``hidden_size`` is the decoder's state size H and the size K of each encoder output h̄_s: a bidirectional
    encoder gives each direction H / 2 (as OpenNMT does), so that every attention, dot included, fits.
    ``decoder`` is "luong", "bahdanau" or "none" (no attention); ``attention`` a name from
    ``rnnkit.attention.ATTENTION_NAMES`` (default: "general" for Luong, "additive" for Bahdanau).
    ``encoder_size`` (None: ``hidden_size``) sets K apart from H: a decoder smaller than its encoder's outputs.
    ``num_layers`` stacks encoder and decoder alike; ``encoder_layers`` (None: ``num_layers``) gives the encoder
    its own depth, its bridge making the decoder's ``num_layers`` initial states.
    ``dropout`` acts on the embeddings, between layers and on the decoder's output features;
    ``encoder_output_dropout`` on the encoder outputs the attention reads (:class:`Encoder`'s ``output_dropout``).
    ``label_smoothing`` is the epsilon of :meth:`Seq2Seq.loss` (0: plain cross-entropy). ``coverage`` feeds the
    running sum of past attention weights into the attention score (Tu et al. 2016; additive or concat
    attention, see :class:`rnnkit.attention.AdditiveAttention`). ``tie_weights`` makes the decoder's output layer
    use its input embedding matrix (needs embedding_size == hidden_size); ``share_embeddings`` gives encoder and
    decoder one embedding (needs one vocabulary for source and target, as fairseq's --share-all-embeddings).
    ``copy_attention`` adds a pointer-generator (See et al. 2017, :class:`PointerGenerator`): the decoder can copy
    source tokens through its attention; it also needs one vocabulary for source and target.
    """

    source_vocab_size: int
    target_vocab_size: int
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    encoder_layers: int | None = None
    encoder_size: int | None = None
    cell: str = "lstm"
    bidirectional: bool = True
    decoder: str = "luong"
    attention: str | None = None
    attention_options: dict = field(default_factory=dict)
    input_feeding: bool = False
    summary: str = "final"
    dropout: float = 0.0
    encoder_output_dropout: float = 0.0
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    label_smoothing: float = 0.0
    coverage: bool = False
    tie_weights: bool = False
    share_embeddings: bool = False
    copy_attention: bool = False


def _check_one_vocabulary(config: Seq2SeqConfig, feature: str) -> None:
    if config.source_vocab_size != config.target_vocab_size:
        raise ValueError(
            f"{feature} needs one vocabulary for source and target, got source_vocab_size="
            f"{config.source_vocab_size} and target_vocab_size={config.target_vocab_size}"
        )


class Seq2Seq(nn.Module):
    """An encoder-decoder model: training ``forward`` and the decoding step interface.

    ``forward(src, src_lengths, tgt_in, teacher_forcing_ratio)`` returns logits (B, T, V). At step t the
    decoder's input is ``tgt_in[:, t]`` (the gold previous token) with probability ``teacher_forcing_ratio``
    and otherwise the model's own argmax prediction from step t - 1 (drawn per sentence and step, as in
    scheduled sampling, Bengio et al. 2015); step 0 always gets ``tgt_in[:, 0]`` (BOS). With ratio 1 and a
    decoder that supports it, all steps run at once (``fast_path``).

    Example::

        model = Seq2Seq.build(Seq2SeqConfig(source_vocab_size=24, target_vocab_size=24, hidden_size=64))
        logits = model(src, src_lengths, tgt_in)                       # (B, T, V)
        loss = model.loss(logits, tgt_out)                             # mean over the non-pad targets
        state = model.start(src, src_lengths)
        log_probs, state = model.step(torch.full((B,), model.bos_id), state)

    With copy attention the decoder's "logits" are the log-probabilities of the pointer-generator mixture: already
    normalised, so cross-entropy, argmax and log_softmax treat them as they treat logits.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        *,
        pad_id: int = PAD_ID,
        bos_id: int = BOS_ID,
        eos_id: int = EOS_ID,
        config: Seq2SeqConfig | None = None,
    ) -> None:
        super().__init__()
        if encoder.output_size != decoder.context_size:
            raise ValueError(
                f"the decoder's context_size must equal the encoder's output size {encoder.output_size}, "
                f"got {decoder.context_size}"
            )
        expected = (decoder.hidden_size, decoder.num_layers, decoder.cell)
        built_for = (encoder.decoder_hidden_size, encoder.decoder_layers, encoder.decoder_cell)
        if built_for != expected:
            raise ValueError(
                "the encoder's bridge must make the decoder's state (hidden_size, num_layers, cell) = "
                f"{expected}, but the encoder was built for {built_for}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.config = config
        self.label_smoothing = check_probability(
            "label_smoothing", 0.0 if config is None else config.label_smoothing
        )

    @classmethod
    def build(cls, config: Seq2SeqConfig) -> Seq2Seq:
        """Build encoder and decoder from a :class:`Seq2SeqConfig`."""
        if config.decoder not in _DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODER_STYLES)}, got {config.decoder!r}")
        hidden = check_size("hidden_size", config.hidden_size)
        size_name = "hidden_size" if config.encoder_size is None else "encoder_size"
        outputs = hidden if config.encoder_size is None else check_size("encoder_size", config.encoder_size)  # K
        if config.bidirectional and outputs % 2:
            raise ValueError(
                f"a bidirectional encoder splits {size_name} in two: it must be even, got {outputs}"
            )
        encoder_layers = config.num_layers
        if config.encoder_layers is not None:
            encoder_layers = check_size("encoder_layers", config.encoder_layers)
        encoder = Encoder(
            config.source_vocab_size,
            config.embedding_size,
            outputs // 2 if config.bidirectional else outputs,
            num_layers=encoder_layers,
            decoder_hidden_size=hidden,
            decoder_layers=config.num_layers,
            cell=config.cell,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
            output_dropout=config.encoder_output_dropout,
            summary=config.summary,
            pad_id=config.pad_id,
        )
        options = dict(
            num_layers=config.num_layers, cell=config.cell, dropout=config.dropout, pad_id=config.pad_id
        )
        if config.decoder != "none":
            options["attention"] = config.attention or (
                "general" if config.decoder == "luong" else "additive"
            )
            options["attention_options"] = dict(config.attention_options)
            if check_bool("coverage", config.coverage):
                if options["attention"] not in _COVERAGE_ATTENTIONS:
                    raise ValueError(
                        f"coverage enters the score of {' or '.join(_COVERAGE_ATTENTIONS)} attention, "
                        f"got attention={options['attention']!r}"
                    )
                options["attention_options"]["coverage"] = True
        elif config.attention is not None or config.coverage:
            raise ValueError(
                f"decoder='none' has no attention, got attention={config.attention!r}, coverage={config.coverage!r}"
            )
        if check_bool("copy_attention", config.copy_attention):
            if config.decoder == "none":
                raise ValueError("copy attention copies through the attention weights: decoder='none' has none")
            _check_one_vocabulary(config, "copy attention copies source token ids into the output, so it")
            options["copy_attention"] = True
        if config.decoder == "luong":
            options["input_feeding"] = config.input_feeding
        elif config.input_feeding:
            raise ValueError(f"input feeding belongs to the Luong decoder, got decoder={config.decoder!r}")
        decoder = _DECODERS[config.decoder](
            config.target_vocab_size, config.embedding_size, hidden, encoder.output_size, **options
        )
        if check_bool("share_embeddings", config.share_embeddings):
            _check_one_vocabulary(config, "share_embeddings")
            decoder.embedding = encoder.embedding  # one (V, E) matrix for both sides
        if check_bool("tie_weights", config.tie_weights):
            decoder.tie_weights()
        return cls(
            encoder, decoder, pad_id=config.pad_id, bos_id=config.bos_id, eos_id=config.eos_id, config=config
        )

    def config_dict(self) -> dict | None:
        """The build config as a plain dict (for ``config.json``), or None if built from parts."""
        return None if self.config is None else asdict(self.config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- the decoding step interface (shared with rnnkit.decoding) -------------------------------------------
    def start(self, src: Tensor, src_lengths: Tensor) -> State:
        """Encode ``src`` (B, S) long with ``src_lengths`` (B,) and return the decoder's initial state."""
        src_lengths = self._check_source(src, src_lengths)
        return self.decoder.init_state(self.encoder(src, src_lengths))

    def step(self, prev_tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """One step: ``prev_tokens`` (N,) long -> (log_probs (N, V), new state). ``state`` is not modified."""
        batch_size = state["hidden"].shape[0]
        if prev_tokens.dim() != 1 or prev_tokens.shape[0] != batch_size or prev_tokens.is_floating_point():
            raise ValueError(
                f"prev_tokens must be a (N,) integer tensor with N={batch_size}, got "
                f"{prev_tokens.dtype} {tuple(prev_tokens.shape)}"
            )
        logits, state = self.decoder.step(prev_tokens, state)
        return F.log_softmax(logits, dim=-1), state

    # -- training ------------------------------------------------------------------------------------------
    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        teacher_forcing_ratio: float = 1.0,
        *,
        return_attention: bool = False,
        fast_path: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """Logits (B, T, V) for every target position, and with ``return_attention`` the weights (B, T, S).

        Args:
            src: (B, S) source token ids. src_lengths: (B,) source lengths in [1, S].
            tgt_in: (B, T) decoder inputs: BOS followed by the target without its last token.
            teacher_forcing_ratio: probability in [0, 1] of feeding the gold token rather than the model's own
                argmax prediction (1: teacher forcing; 0: the model's own predictions).
            return_attention: also return the attention weights (None for a decoder without attention).
            fast_path: allow the one-call decoder path under full teacher forcing (False: always step).
            generator: random source for the teacher-forcing coin flips.
        """
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(f"teacher_forcing_ratio must be in [0, 1], got {teacher_forcing_ratio!r}")
        _check_decoder_inputs(src, tgt_in)
        state = self.start(src, src_lengths)
        if teacher_forcing_ratio == 1.0 and fast_path and self.decoder.supports_parallel:
            logits, attention = self.decoder.forward_parallel(tgt_in, state)
        else:
            logits, attention = self._forward_steps(tgt_in, state, teacher_forcing_ratio, generator)
        return (logits, attention) if return_attention else logits

    def _forward_steps(
        self, tgt_in: Tensor, state: State, teacher_forcing_ratio: float, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor | None]:
        """The step loop: each input is the gold token or, with probability 1 - ratio, the last prediction."""
        all_logits, all_attention = [], []
        inputs = tgt_in[:, 0]  # BOS: (B,)
        for t, gold in enumerate(tgt_in.unbind(1)):
            if t > 0 and teacher_forcing_ratio < 1.0:
                predicted = all_logits[-1].argmax(-1)  # the model's own previous output: (B,)
                # one coin flip per sentence and step (Bengio et al. 2015, sec. 2.4)
                coin = torch.rand(gold.shape, generator=generator).to(gold.device)  # (B,)
                inputs = torch.where(coin < teacher_forcing_ratio, gold, predicted)
            else:
                inputs = gold
            logits, state = self.decoder.step(inputs, state)  # (B, V)
            all_logits.append(logits)
            if self.decoder.has_attention:
                all_attention.append(state["attention"])
        attention = torch.stack(all_attention, dim=1) if all_attention else None  # (B, T, S)
        return torch.stack(all_logits, dim=1), attention  # (B, T, V)

    def loss(
        self, logits: Tensor, tgt_out: Tensor, *, label_smoothing: float | None = None, reduction: str = "mean"
    ) -> Tensor:
        """Token-level cross-entropy of ``logits`` (B, T, V) against ``tgt_out`` (B, T); padding is ignored.

        With label smoothing epsilon (Szegedy et al. 2016, section 7) the target of each position is
        q = (1 - epsilon) one_hot(y) + epsilon / V, so the loss of a position is

            -sum_v q(v) log p(v) = (1 - epsilon) (-log p(y)) + epsilon * mean_v(-log p(v)),

        the semantics of ``torch.nn.functional.cross_entropy(label_smoothing=epsilon)``: the epsilon / V goes
        to every token of the vocabulary, padding included. Positions whose target is ``pad_id`` count for
        nothing. ``reduction`` "mean" averages over the non-pad positions, "sum" adds them up.

        Args:
            label_smoothing: epsilon in [0, 1); default the config's (0 for a model built from parts). Pass 0 for
                the plain negative log-likelihood (validation loss, perplexity).
        """
        epsilon = self.label_smoothing if label_smoothing is None else check_probability(
            "label_smoothing", label_smoothing
        )
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if logits.dim() != 3 or tgt_out.shape != logits.shape[:2]:
            raise ValueError(
                f"logits must be (B, T, V) and tgt_out (B, T) with the same B and T, got "
                f"{tuple(logits.shape)} and {tuple(tgt_out.shape)}"
            )
        return F.cross_entropy(
            logits.flatten(0, 1), tgt_out.flatten(), ignore_index=self.pad_id, label_smoothing=epsilon,
            reduction=reduction,
        )  # fmt: skip

    def teacher_forced_loss(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor, *,
        label_smoothing: float | None = None,
    ) -> Tensor:
        """``self.loss(self(src, src_lengths, tgt_in), tgt_out, label_smoothing=...)``, the mean token loss under
        full teacher forcing, without the (B, T, V) logits where the decoder allows it.

        A decoder whose steps run in one call and whose output is its output layer's logits (no copy
        attention) hands the output layer's inputs to :func:`rnnkit.losses.linear_cross_entropy`, which forms
        the logits and their gradients a few rows at a time; any other decoder takes the unfused path.
        """
        decoder = self.decoder
        if not decoder.supports_parallel or decoder.pointer is not None:
            return self.loss(self(src, src_lengths, tgt_in), tgt_out, label_smoothing=label_smoothing)
        epsilon = self.label_smoothing if label_smoothing is None else check_probability(
            "label_smoothing", label_smoothing
        )
        _check_decoder_inputs(src, tgt_in)
        if tgt_out.shape != tgt_in.shape:
            raise ValueError(f"tgt_out must be (B, T) = {tuple(tgt_in.shape)} like tgt_in, got {tuple(tgt_out.shape)}")
        features, _ = decoder.parallel_features(tgt_in, self.start(src, src_lengths))  # (B, T, F)
        output = decoder.output_layer
        return linear_cross_entropy(
            features.flatten(0, 1), output.weight, output.bias, tgt_out.flatten(), ignore_index=self.pad_id,
            label_smoothing=epsilon,
        )

    def _check_source(self, src: Tensor, src_lengths) -> Tensor:
        if not isinstance(src, Tensor) or src.dim() != 2 or src.is_floating_point():
            given = f"{src.dtype} {tuple(src.shape)}" if isinstance(src, Tensor) else type(src).__name__
            raise ValueError(f"src must be a (B, S) integer tensor of token ids, got {given}")
        batch_size, source_length = src.shape
        src_lengths = torch.as_tensor(src_lengths)
        if src_lengths.shape != (batch_size,) or src_lengths.is_floating_point():
            raise ValueError(
                f"src_lengths must be (B,)=({batch_size},) integers, got {tuple(src_lengths.shape)}"
            )
        if bool((src_lengths < 1).any()) or bool((src_lengths > source_length).any()):
            raise ValueError(f"src_lengths must lie in [1, S={source_length}], got {src_lengths.tolist()}")
        vocab_size = self.encoder.embedding.num_embeddings
        if bool((src < 0).any()) or bool((src >= vocab_size).any()):
            raise ValueError(f"src token ids must lie in [0, {vocab_size}), got max {int(src.max())}")
        return src_lengths

    def extra_repr(self) -> str:
        return f"pad_id={self.pad_id}, bos_id={self.bos_id}, eos_id={self.eos_id}"
