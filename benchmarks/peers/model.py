"""The model both toolkits train, on paper: its parameter count in each toolkit's layout and its FLOPs.

The model of issue 21: a GRU encoder-decoder with additive (Bahdanau) attention, embeddings E = 256, a
bidirectional encoder of 2 x 256, a decoder of H = 512, BPE vocabularies of 8k per side. JoeyNMT 2.3.0
builds it as ``RecurrentEncoder`` + ``RecurrentDecoder(attention="bahdanau", input_feeding=True)``, and
its decoder step is Luong-ordered (Luong et al. 2015, sec. 3; JoeyNMT ``RecurrentDecoder._forward_step``)::

    s_t  = GRU([E y_{t-1}; h~_{t-1}], s_{t-1})                (input feeding, h~_0 = 0)
    a_t  = softmax_s(v^T tanh(W_q s_t + W_k h̄_s))            c_t = sum_s a_t(s) h̄_s
    h~_t = tanh(W_c [s_t; c_t] + b_c)                         logits_t = W_o h~_t

with s_0 = tanh(W_b [→h_S; ←h_1] + b_b). rnnkit builds the same graph with ``--decoder luong --attention
additive --input-feeding``; the two differ only in three bias vectors (rnnkit: b_k on the key projection
and b_o on the output layer; JoeyNMT: b_c), see :func:`parameter_count`.

This module is plain arithmetic (no torch, no rnnkit): the JoeyNMT runner imports it inside JoeyNMT's own
virtual environment to check its model against the same formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

LAYOUTS = ("rnnkit", "joeynmt")


@dataclass(frozen=True)
class Dims:
    """The model's sizes: vocabularies (specials included), E, the encoder's H_e per direction, the decoder's
    H. Keys h̄_s have K = 2 H_e features and the attention's hidden layer has A = H units (JoeyNMT's
    ``BahdanauAttention(hidden_size=H)``; rnnkit's additive attention uses A = K, and K = H there)."""

    source_vocab: int
    target_vocab: int
    embedding: int = 256
    encoder_hidden: int = 256
    decoder_hidden: int = 512

    @property
    def keys(self) -> int:  # K
        return 2 * self.encoder_hidden

    def __post_init__(self) -> None:
        if self.keys != self.decoder_hidden:
            raise ValueError(f"rnnkit's layout needs 2 x encoder_hidden == decoder_hidden, got "
                             f"2 x {self.encoder_hidden} and {self.decoder_hidden}")


@dataclass(frozen=True)
class Counts:
    """What the matrix products of a training batch (or a whole corpus) meet: sentence pairs, real source
    tokens sum(S_i), real target tokens sum(T_i) (EOS included) and source-target position pairs
    sum(S_i * T_i) (one attention score and one context term each)."""

    sentences: int
    source_tokens: int
    target_tokens: int
    attention_pairs: int

    @classmethod
    def of(cls, lengths: list[tuple[int, int]]) -> Counts:
        """From (S_i, T_i) per sentence pair."""
        return cls(len(lengths), sum(s for s, _ in lengths), sum(t for _, t in lengths),
                   sum(s * t for s, t in lengths))


def _gru(input_size: int, hidden: int) -> tuple[int, int]:
    """Weights and biases of one GRU direction: W_ih (3H, D), W_hh (3H, H), b_ih, b_hh (3H each)."""
    return 3 * hidden * (input_size + hidden), 6 * hidden


def parameter_count(dims: Dims, layout: str) -> dict[str, int]:
    """Parameters by part, as built by ``layout`` ("rnnkit" or "joeynmt"); ``total`` is their sum."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    e, he, h, k, a = dims.embedding, dims.encoder_hidden, dims.decoder_hidden, dims.keys, dims.decoder_hidden
    rnnkit = layout == "rnnkit"
    parts = {
        "embeddings": (dims.source_vocab + dims.target_vocab) * e,
        "encoder GRU (2 directions)": 2 * sum(_gru(e, he)),
        "bridge": h * k + h,
        # W_q (A, H) and W_k (A, K) without bias, v (A,); rnnkit's key projection has a bias b_k
        "attention": a * h + a * k + a + (a if rnnkit else 0),
        "decoder GRU": sum(_gru(e + h, h)),
        # W_c (H, H + K); JoeyNMT's att_vector_layer has a bias b_c, rnnkit's combine has none
        "attentional layer": h * (h + k) + (0 if rnnkit else h),
        # W_o (V, H); rnnkit's output layer has a bias b_o, JoeyNMT's has none
        "output layer": dims.target_vocab * h + (dims.target_vocab if rnnkit else 0),
    }
    parts["total"] = sum(parts.values())
    return parts


def forward_macs(dims: Dims, counts: Counts) -> dict[str, int]:
    """Multiply-accumulates of the matrix products of one forward pass, by part (embeddings are lookups).

    Each weight matrix meets the rows it is applied to: the encoder's GRU and the key projection W_k one per
    real source token, the bridge one per sentence, every decoder matrix one per real target token; the
    attention's v^T tanh(.) and the context sum one per (source, target) position pair."""
    e, he, h, k, a = dims.embedding, dims.encoder_hidden, dims.decoder_hidden, dims.keys, dims.decoder_hidden
    return {
        "encoder recurrence": counts.source_tokens * 2 * _gru(e, he)[0],
        "bridge": counts.sentences * h * k,
        "decoder recurrence": counts.target_tokens * _gru(e + h, h)[0],
        "attention": counts.source_tokens * a * k + counts.target_tokens * a * h
        + counts.attention_pairs * (a + k),
        "attentional layer": counts.target_tokens * h * (h + k),
        "output layer": counts.target_tokens * dims.target_vocab * h,
    }


def training_flops(dims: Dims, counts: Counts) -> float:
    """FLOPs of the matrix products of a training step: 3 x the forward's 2 x MACs (each product's backward
    computes the gradients of both operands, as many FLOPs again each). ``tests/test_benchmark_peers.py``
    checks it against torch.utils.flop_counter on rnnkit's model, and the JoeyNMT runner on JoeyNMT's."""
    return 3 * 2.0 * sum(forward_macs(dims, counts).values())
