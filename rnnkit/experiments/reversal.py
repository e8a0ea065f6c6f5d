"""Reversing sequences with and without attention: accuracy against source length.

The task: a source of n symbols (from an alphabet of 20 by default, n from 5 to 30) and the target is the same
symbols in reverse order. A decoder without attention must squeeze the whole source into a fixed-size vector,
so its accuracy falls as sources get longer; with attention each output step looks up the source position it
needs, and long sources are about as easy as short ones (Bahdanau et al. 2014, Fig. 2, in miniature).

Typical use (the ``attention-length`` experiment and ``tests/test_seq2seq.py`` both do this)::

    result = run_reversal(ReversalConfig(attention="general"))
    result.bucket_accuracy          # {"5-10": 0.99, "11-20": 0.98, "21-30": 0.96}
    plain = run_reversal(ReversalConfig(attention=None))   # the same model, decoder without attention

Token ids: pad 0, unk 1, bos 2, eos 3, then the symbols 4 .. 4 + symbols - 1 (``rnnkit.seq2seq`` convention).
Token accuracy counts, over the first n target positions of each sentence, the greedy prediction equal to the
reversed source; positions after a too-early EOS count as wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.seq2seq import BOS_ID, EOS_ID, PAD_ID, Seq2Seq, Seq2SeqConfig

__all__ = [
    "ReversalConfig",
    "ReversalResult",
    "reversal_batch",
    "build_model",
    "train_reversal",
    "greedy_tokens",
    "accuracy_by_length",
    "run_reversal",
]

FIRST_SYMBOL = 4  # ids below are pad, unk, bos, eos


@dataclass
class ReversalConfig:
    """The reversal experiment's settings; ``attention=None`` gives the same model without attention."""

    symbols: int = 20
    min_length: int = 5
    max_length: int = 30
    attention: str | None = "general"
    decoder: str = "luong"
    cell: str = "lstm"
    embedding_size: int = 32
    hidden_size: int = 64
    num_layers: int = 1
    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 3e-3
    clip_norm: float = 1.0
    seed: int = 0
    eval_sentences: int = 100  # per source length
    buckets: tuple[tuple[int, int], ...] = ((5, 10), (11, 20), (21, 30))
    threads: int | None = None  # torch.set_num_threads during the run (None: leave as is)
    model_options: dict = field(default_factory=dict)  # extra Seq2SeqConfig fields (e.g. input_feeding)


@dataclass
class ReversalResult:
    """Accuracies of a trained model. ``length_accuracy[n]`` is the token accuracy on sources of length n."""

    config: ReversalConfig
    length_accuracy: dict[int, float]
    bucket_accuracy: dict[str, float]
    train_seconds: float
    final_loss: float
    model: Seq2Seq


def reversal_batch(
    batch_size: int, symbols: int, min_length: int, max_length: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A random batch: ``src`` (B, S), ``src_lengths`` (B,), ``tgt_in`` (B, S + 1), ``tgt_out`` (B, S + 1).

    ``tgt_in`` = BOS + reversed source, ``tgt_out`` = reversed source + EOS, both padded with PAD.
    """
    lengths = torch.randint(min_length, max_length + 1, (batch_size,), generator=generator)  # (B,)
    source_length = int(lengths.max())
    positions = torch.arange(source_length)
    valid = positions < lengths.unsqueeze(1)  # (B, S)
    src = torch.randint(
        FIRST_SYMBOL, FIRST_SYMBOL + symbols, (batch_size, source_length), generator=generator
    )
    src = src.masked_fill(~valid, PAD_ID)
    # reversed valid prefix: position t of the target is source position n - 1 - t
    reverse_index = (lengths.unsqueeze(1) - 1 - positions).clamp(min=0)  # (B, S)
    reversed_src = src.gather(1, reverse_index).masked_fill(~valid, PAD_ID)
    pad_column = torch.full((batch_size, 1), PAD_ID, dtype=torch.long)
    bos_column = torch.full((batch_size, 1), BOS_ID, dtype=torch.long)
    tgt_in = torch.cat([bos_column, reversed_src], dim=1)  # (B, S + 1)
    tgt_out = torch.cat([reversed_src, pad_column], dim=1)  # (B, S + 1)
    tgt_out[torch.arange(batch_size), lengths] = EOS_ID
    return src, lengths, tgt_in, tgt_out


def build_model(config: ReversalConfig) -> Seq2Seq:
    """The experiment's model: bidirectional encoder, Luong decoder with ``config.attention`` (or none)."""
    vocab_size = FIRST_SYMBOL + config.symbols
    options = dict(config.model_options)
    if config.attention is None:
        options.update(decoder="none")
    else:
        options.update(decoder=config.decoder, attention=config.attention)
    return Seq2Seq.build(
        Seq2SeqConfig(
            source_vocab_size=vocab_size,
            target_vocab_size=vocab_size,
            embedding_size=config.embedding_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            cell=config.cell,
            **options,
        )
    )


def train_reversal(model: Seq2Seq, config: ReversalConfig) -> float:
    """Teacher-forced training with Adam and gradient clipping; returns the mean loss of the last 50 steps."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    # halve the learning rate for the last third: the loss settles without extra steps
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [2 * config.steps // 3], gamma=0.5)
    model.train()
    recent = []
    for _ in range(config.steps):
        src, lengths, tgt_in, tgt_out = reversal_batch(
            config.batch_size, config.symbols, config.min_length, config.max_length, generator
        )
        logits = model(src, lengths, tgt_in)  # (B, T, V)
        loss = F.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=PAD_ID)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        scheduler.step()
        recent = (recent + [loss.item()])[-50:]
    return sum(recent) / len(recent)


@torch.no_grad()
def greedy_tokens(model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_steps: int) -> Tensor:
    """Greedy decoding through ``model.start`` / ``model.step``: (B, max_steps) tokens, PAD after each EOS."""
    state = model.start(src, src_lengths)
    tokens = torch.full((src.shape[0],), model.bos_id, dtype=torch.long)
    finished = torch.zeros(src.shape[0], dtype=torch.bool)
    outputs = []
    for _ in range(max_steps):
        log_probs, state = model.step(tokens, state)  # (B, V)
        tokens = log_probs.argmax(-1)  # the most probable next token
        outputs.append(tokens.masked_fill(finished, PAD_ID))  # nothing counts after a sentence's EOS
        finished |= tokens == model.eos_id
    return torch.stack(outputs, dim=1)  # (B, max_steps)


def accuracy_by_length(
    model: Seq2Seq, config: ReversalConfig, lengths: list[int] | range
) -> dict[int, float]:
    """Greedy token accuracy for each source length, on ``config.eval_sentences`` fresh sentences each."""
    model.eval()
    generator = torch.Generator().manual_seed(config.seed + 1000)  # disjoint from the training stream
    accuracy = {}
    for length in lengths:
        src, src_lengths, _, tgt_out = reversal_batch(
            config.eval_sentences, config.symbols, length, length, generator
        )
        predicted = greedy_tokens(model, src, src_lengths, max_steps=length)  # (N, n)
        accuracy[length] = (predicted == tgt_out[:, :length]).float().mean().item()
    return accuracy


def run_reversal(config: ReversalConfig | None = None) -> ReversalResult:
    """Build, train and evaluate one model; accuracies per length and per bucket of ``config.buckets``."""
    config = config or ReversalConfig()
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        model = build_model(config)
        started = time.perf_counter()
        final_loss = train_reversal(model, config)
        seconds = time.perf_counter() - started
        length_accuracy = accuracy_by_length(model, config, range(config.min_length, config.max_length + 1))
    finally:
        torch.set_num_threads(previous_threads)
    bucket_accuracy = {}
    for low, high in config.buckets:
        bucket = [n for n in range(low, high + 1) if n in length_accuracy]
        # token accuracy of the bucket: every length has the same sentence count, so weight by n tokens
        bucket_accuracy[f"{low}-{high}"] = sum(length_accuracy[n] * n for n in bucket) / sum(bucket)
    return ReversalResult(config, length_accuracy, bucket_accuracy, seconds, final_loss, model)
