"""Padding, packing, bucketed batches and LM streams (rnnkit.data.batching)."""

from __future__ import annotations

import random

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from rnnkit.data import (
    EOS_ID,
    BucketBatchSampler,
    Vocab,
    batchify,
    bptt_chunks,
    bucketed_batches,
    num_bptt_chunks,
    pack,
    pad_sequences,
    padded_fraction,
    random_batches,
    token_stream,
    unpack,
    valid_mask,
)


def test_pad_sequences_and_valid_mask():
    padded, lengths = pad_sequences([[5, 6, 7], [8], [9, 10]])
    assert padded.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert lengths.tolist() == [3, 1, 2]
    assert valid_mask(lengths).tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    targets, _ = pad_sequences([[1, 2], [3]], pad_value=-100, max_len=4)
    assert targets.tolist() == [[1, 2, -100, -100], [3, -100, -100, -100]]
    with pytest.raises(ValueError, match="max_len"):
        pad_sequences([[1, 2, 3]], max_len=2)


def test_pad_feature_sequences():
    a, b = torch.ones(3, 2), torch.full((1, 2), 2.0)
    padded, lengths = pad_sequences([a, b], pad_value=0.0, dtype=torch.float32)
    assert padded.shape == (2, 3, 2) and lengths.tolist() == [3, 1]
    assert torch.equal(padded[1, 1:], torch.zeros(2, 2))


def test_pack_matches_torch_and_unpack_inverts():
    sequences = [torch.randn(n, 4) for n in (2, 5, 3)]
    padded, lengths = pad_sequences(sequences, pad_value=0.0, dtype=torch.float32)
    packed = pack(padded, lengths)
    reference = pack_sequence(sequences, enforce_sorted=False)
    assert torch.equal(packed.data, reference.data)
    assert torch.equal(packed.batch_sizes, reference.batch_sizes)
    back, back_lengths = unpack(packed)
    assert torch.equal(back, padded) and torch.equal(back_lengths, lengths)


def _check_partition(batches, n, batch_size):
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))  # every example exactly once
    assert all(1 <= len(b) <= batch_size for b in batches)


def test_bucketed_batches_partition_and_determinism():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(1000)]
    batches = bucketed_batches(lengths, batch_size=16, seed=3, pool_batches=10)
    _check_partition(batches, 1000, 16)
    assert batches == bucketed_batches(lengths, batch_size=16, seed=3, pool_batches=10)
    assert batches != bucketed_batches(lengths, batch_size=16, seed=4, pool_batches=10)
    _check_partition(random_batches(lengths, 16, seed=3), 1000, 16)
    dropped = bucketed_batches(lengths, batch_size=16, seed=3, drop_last=True)
    assert all(len(b) == 16 for b in dropped)


def test_bucketing_reduces_padding_on_random_lengths():
    rng = random.Random(1)
    lengths = [rng.randint(1, 100) for _ in range(3200)]
    bucketed = padded_fraction(bucketed_batches(lengths, 32, seed=0), lengths)
    shuffled = padded_fraction(random_batches(lengths, 32, seed=0), lengths)
    assert bucketed < 0.1 < 0.4 < shuffled


def test_unshuffled_bucketing_sorts_everything():
    lengths = [5, 1, 4, 2, 3, 6]
    assert bucketed_batches(lengths, 2, shuffle=False) == [[1, 3], [4, 2], [0, 5]]


def test_padded_fraction_by_hand():
    lengths = [2, 4, 3, 3]
    # batch [0, 1]: 2 * 4 = 8 cells, 6 real; batch [2, 3]: 6 cells, 6 real -> 2 / 14 padding
    assert padded_fraction([[0, 1], [2, 3]], lengths) == pytest.approx(2 / 14)
    assert padded_fraction([[0], [1], [2], [3]], lengths) == 0.0


def test_bucket_sampler_with_dataloader_and_epochs():
    lengths = [random.Random(i).randint(1, 30) for i in range(100)]
    sampler = BucketBatchSampler(lengths, batch_size=8, seed=0, pool_batches=4)
    loader = torch.utils.data.DataLoader(list(range(100)), batch_sampler=sampler)
    epoch0 = [batch.tolist() for batch in loader]
    _check_partition(epoch0, 100, 8)
    assert len(sampler) == len(epoch0)
    sampler.set_epoch(1)
    epoch1 = [batch.tolist() for batch in loader]
    assert epoch1 != epoch0
    assert epoch1 == bucketed_batches(lengths, 8, seed=1, pool_batches=4)


def test_token_stream_word_level_adds_eos_per_line():
    vocab = Vocab.build(["a b", "c"])
    stream = token_stream("a b\n\nc\n", vocab)
    assert stream.tolist() == [vocab.stoi["a"], vocab.stoi["b"], EOS_ID, vocab.stoi["c"], EOS_ID]
    chars = Vocab.build(["ab\n"], level="char")
    assert token_stream("ab\nb", chars).tolist() == chars.encode("ab\nb")


def test_batchify_rows_are_contiguous_segments():
    stream = torch.arange(23)
    rows = batchify(stream, 4)  # (4, 5): the last 3 tokens do not fill a column
    assert rows.shape == (4, 5)
    assert rows[1].tolist() == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(5), 4)


def test_bptt_chunks_shift_targets_and_cover_the_rows():
    rows = batchify(torch.arange(2 * 11), 2)  # (2, 11)
    chunks = list(bptt_chunks(rows, bptt=4))
    assert [x.shape[1] for x, _ in chunks] == [4, 4, 2]
    assert len(chunks) == num_bptt_chunks(rows, 4)
    inputs = torch.cat([x for x, _ in chunks], dim=1)
    targets = torch.cat([y for _, y in chunks], dim=1)
    assert torch.equal(inputs, rows[:, :-1])
    assert torch.equal(targets, rows[:, 1:])
    first_x, first_y = chunks[0]
    assert first_x[0].tolist() == [0, 1, 2, 3] and first_y[0].tolist() == [1, 2, 3, 4]
    assert first_x[1].tolist() == [11, 12, 13, 14]


def test_token_batches_never_exceed_the_token_limit_and_cover_every_example_once():
    from rnnkit.data import token_batches

    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(2000)] + [150]  # one example longer than the limit
    for seed in (0, 1):
        batches = token_batches(lengths, max_tokens=120, seed=seed, pool_batches=10)
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        for batch in batches:
            padded = len(batch) * max(lengths[i] for i in batch)
            assert padded <= 120 or (len(batch) == 1 and lengths[batch[0]] > 120)
        assert padded_fraction(batches, lengths) < 0.1  # sorted pools: little padding
    assert token_batches(lengths, 120, seed=3) == token_batches(lengths, 120, seed=3)
    assert token_batches(lengths, 120, seed=3) != token_batches(lengths, 120, seed=4)
    ordered = token_batches(lengths, 120, shuffle=False)
    flat = [i for batch in ordered for i in batch]
    assert [lengths[i] for i in flat] == sorted(lengths)
    # Greedy: no batch could have taken the next example in length order without passing the limit.
    for batch, following in zip(ordered, ordered[1:], strict=False):
        assert (len(batch) + 1) * lengths[following[0]] > 120
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        token_batches(lengths, 0)
