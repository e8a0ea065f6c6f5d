"""Turning records into batches: padding, packing, length-bucketed batches, and LM streams for TBPTT.

Batches are batch-first: a padded batch is (B, T) with a (B,) tensor of lengths, and ``valid`` (B, T) is
True at real positions. Batches of similar lengths waste less compute on padding; :func:`bucketed_batches`
makes them while keeping the order random (a pool of batches is sorted, then the batches are shuffled),
and :func:`padded_fraction` measures what is left.

Language models read one contiguous token stream. Following Zaremba et al. 2014 it is cut into B parallel
rows (:func:`batchify`), and truncated back-propagation through time walks along the rows in chunks of
``bptt`` steps (:func:`bptt_chunks`), the hidden state carried from one chunk to the next.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.checks import check_size
from rnnkit.data.tokenizer import Tokenizer
from rnnkit.data.vocab import EOS_ID, PAD_ID

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default: padded targets contribute no loss

# ----------------------------------------------------------------------------------------------------------
# Padding and packing
# ----------------------------------------------------------------------------------------------------------


def pad_sequences(
    sequences: Sequence[Sequence[int] | Tensor],
    pad_value: int | float = PAD_ID,
    dtype: torch.dtype = torch.long,
    max_len: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Stack variable-length sequences into a padded batch.

    Args:
        sequences: B sequences of ids (lists or 1-D tensors), or of feature vectors (2-D tensors (T_b, D)).
        pad_value: filler past each length (``PAD_ID`` = 0 for tokens, ``IGNORE_INDEX`` for targets).
        dtype: dtype of the result.
        max_len: pad to this length instead of the longest sequence (must be >= every length).

    Returns:
        ``(padded, lengths)``: padded (B, T) or (B, T, D), lengths (B,) int64.
    """
    if len(sequences) == 0:
        raise ValueError("pad_sequences needs at least one sequence, got none")
    tensors = [torch.as_tensor(s, dtype=dtype) for s in sequences]
    lengths = torch.tensor([len(t) for t in tensors], dtype=torch.long)  # (B,)
    longest = int(lengths.max())
    width = longest if max_len is None else max_len
    if width < longest:
        raise ValueError(f"max_len must be >= the longest sequence ({longest}), got {max_len}")
    trailing = tensors[0].shape[1:]
    padded = torch.full((len(tensors), width, *trailing), pad_value, dtype=dtype)  # (B, T, ...)
    for row, tensor in enumerate(tensors):
        padded[row, : len(tensor)] = tensor
    return padded, lengths


def valid_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """``valid`` (B, T) bool, True at positions t < lengths[b] (the real, non-padding positions)."""
    width = int(lengths.max()) if max_len is None else max_len
    steps = torch.arange(width, device=lengths.device)  # (T,)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)


def pack(padded: Tensor, lengths: Tensor) -> PackedSequence:
    """Pack a batch-first padded batch (B, T, ...) for ``torch.nn``-style layers (any length order)."""
    return pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)


def unpack(packed: PackedSequence, pad_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack`: ``(padded (B, T, ...), lengths (B,))`` in the original batch order."""
    return pad_packed_sequence(packed, batch_first=True, padding_value=pad_value)


# ----------------------------------------------------------------------------------------------------------
# Batches of example indices
# ----------------------------------------------------------------------------------------------------------


def _check_batch_args(lengths: Sequence[int], batch_size: int) -> None:
    check_size("batch_size", batch_size)
    if len(lengths) == 0:
        raise ValueError("need at least one example to batch, got none")


def _chunk(indices: list[int], batch_size: int, drop_last: bool) -> list[list[int]]:
    batches = [indices[i: i + batch_size] for i in range(0, len(indices), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def random_batches(
    lengths: Sequence[int], batch_size: int, seed: int = 0, drop_last: bool = False
) -> list[list[int]]:
    """Batches of example indices in a seeded random order, ignoring lengths (the baseline for bucketing)."""
    _check_batch_args(lengths, batch_size)
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    return _chunk(order, batch_size, drop_last)


def bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int = 0,
    pool_batches: int = 100,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[list[int]]:
    """Batches of example indices with similar lengths, in a random but seeded order.

    The examples are shuffled, cut into pools of ``pool_batches * batch_size``, each pool is sorted by
    length and cut into batches, and finally the order of all batches is shuffled. Pools keep some
    randomness in which examples meet in a batch; sorting within a pool keeps the padding small
    (the scheme of e.g. the fairseq / tensor2tensor length bucketing).

    With ``shuffle=False`` (evaluation) the whole set is sorted by length and batches come in that order.
    """
    _check_batch_args(lengths, batch_size)
    check_size("pool_batches", pool_batches)
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lambda i: lengths[i])
        return _chunk(order, batch_size, drop_last)
    rng = random.Random(seed)
    rng.shuffle(order)
    pool_size = pool_batches * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start: start + pool_size], key=lambda i: lengths[i])  # stable: ties keep shuffle
        batches.extend(_chunk(pool, batch_size, drop_last=False))
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


def token_batches(lengths: Sequence[int], max_tokens: int, seed: int = 0, pool_batches: int = 100,
                  shuffle: bool = True) -> list[list[int]]:
    """Batches of example indices holding at most ``max_tokens`` padded tokens each, |b| * max_{i in b} len_i
    <= max_tokens (fairseq's --max-tokens, JoeyNMT's batch_type "token"), every index exactly once.

    Like :func:`bucketed_batches`: the examples are shuffled, cut into pools of about ``pool_batches`` batches,
    each pool is sorted by length and cut greedily (a batch grows while its padded size fits), and the batches
    are shuffled. An example longer than ``max_tokens`` on its own makes a batch of one. With ``shuffle=False``
    the whole set is sorted by length and batches come in that order.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if len(lengths) == 0:
        raise ValueError("need at least one example to batch, got none")
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
        mean = max(1, round(sum(lengths) / len(lengths)))
        pool_size = pool_batches * max(1, max_tokens // mean)
    else:
        pool_size = len(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_size):
        batch: list[int] = []
        longest = 0
        for index in sorted(order[start: start + pool_size], key=lambda i: lengths[i]):  # stable
            grown = max(longest, lengths[index])
            if batch and (len(batch) + 1) * grown > max_tokens:
                batches.append(batch)
                batch, grown = [], lengths[index]
            batch.append(index)
            longest = grown
        if batch:
            batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches


def padded_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Fraction of the (B, T) cells of all batches that are padding:
    sum_batches (|b| * max_{i in b} len_i - sum_{i in b} len_i) / sum_batches |b| * max_{i in b} len_i."""
    cells = real = 0
    for batch in batches:
        batch_lengths = [lengths[i] for i in batch]
        cells += len(batch) * max(batch_lengths)
        real += sum(batch_lengths)
    return 0.0 if cells == 0 else (cells - real) / cells


class BucketBatchSampler(torch.utils.data.Sampler):
    """A ``batch_sampler`` for ``torch.utils.data.DataLoader`` that yields :func:`bucketed_batches`.

    Call :meth:`set_epoch` before each epoch for a fresh (still deterministic) order: the batches of epoch
    ``e`` are those of seed ``seed + e``.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 100,
                 shuffle: bool = True, drop_last: bool = False) -> None:
        _check_batch_args(lengths, batch_size)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.pool_batches = pool_batches
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        return bucketed_batches(self.lengths, self.batch_size, self.seed + self.epoch, self.pool_batches,
                                self.shuffle, self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


# ----------------------------------------------------------------------------------------------------------
# Language-model streams and truncated BPTT
# ----------------------------------------------------------------------------------------------------------


def token_stream(text: str, tokenizer: Tokenizer) -> Tensor:
    """One contiguous (N,) int64 stream of the token ids of a corpus.

    Character level: every character, newlines included. Word level and subwords: each line's tokens
    followed by ``<eos>`` (id 3), as in the Mikolov PTB setup where end of sentence is a predicted token.
    """
    if tokenizer.level == "char":
        return torch.tensor(tokenizer.encode(text), dtype=torch.long)
    ids: list[int] = []
    for line in text.split("\n"):
        if line.strip():
            ids.extend(tokenizer.encode(line))
            ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.long)  # (N,)


def batchify(stream: Tensor, batch_size: int) -> Tensor:
    """Cut a (N,) stream into ``batch_size`` contiguous rows (B, N // B); the last N mod B tokens are dropped.

    Row b holds stream[b * L : (b + 1) * L] with L = N // B, so each row is read left to right across chunks
    and a model's state at the end of one chunk is the right state for the start of the next (Zaremba et al.
    2014).
    """
    if stream.dim() != 1:
        raise ValueError(f"stream must be 1-D (N,), got shape {tuple(stream.shape)}")
    check_size("batch_size", batch_size)
    row_length = stream.numel() // batch_size
    if row_length < 2:
        raise ValueError(
            f"a stream of {stream.numel()} tokens is too short for {batch_size} rows of >= 2 tokens"
        )
    return stream[: row_length * batch_size].view(batch_size, row_length)  # (B, L)


def bptt_chunks(rows: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Walk (B, L) rows in chunks for truncated BPTT: yields ``(inputs, targets)``, each (B, t), t <= bptt.

    ``targets`` are ``inputs`` shifted one step ahead: targets[:, j] = rows[:, i + j + 1]. The last chunk is
    shorter when (L - 1) is not a multiple of ``bptt``. Every token but the first of a row is a target once.
    """
    check_size("bptt", bptt)
    length = rows.size(1)
    for start in range(0, length - 1, bptt):
        steps = min(bptt, length - 1 - start)
        yield rows[:, start: start + steps], rows[:, start + 1: start + 1 + steps]  # (B, t), (B, t)


def num_bptt_chunks(rows: Tensor, bptt: int) -> int:
    """How many chunks :func:`bptt_chunks` yields for these rows."""
    return -(-(rows.size(1) - 1) // bptt)
