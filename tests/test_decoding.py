"""Tests for rnnkit.decoding on fixed probability tables whose expected results are derived by hand here.

Vocabulary convention: pad=0, unk=1, bos=2, eos=3, then ordinary tokens A=4, B=5, ...
Hypotheses are written as their emitted tokens, EOS included (e.g. "a a eos" = [A, A, EOS]).
"""

import itertools
import math
import zlib
from collections import namedtuple
from functools import cache, lru_cache

import pytest
import torch

from rnnkit.decoding import (
    COVERAGE_FLOOR,
    Ensemble,
    beam_search,
    coverage_penalty,
    filter_log_probs,
    greedy_decode,
    length_limits,
    length_penalty,
    map_state,
    sample_decode,
    translate,
)

PAD, UNK, BOS, EOS, A, B = 0, 1, 2, 3, 4, 5
MAX_STEPS = 20  # capacity of the prefix buffer of the test models
SOURCE_POSITIONS = 5  # S of CoverageModel's attention; table t has 2 + t % 4 real positions


# ----------------------------------------------------------------------------------------------------------
# Test models
# ----------------------------------------------------------------------------------------------------------


class PrefixModel:
    """log p(next | fed prefix) from a Python function of (table id, fed prefix), the fed prefix starting with
    the first input token (BOS). The state carries everything as tensors with the batch as dim 0:

        prefix (N, MAX_STEPS + 1) long, the fed tokens (-1 past the end); length (N,); table (N,);
        attention (N, MAX_STEPS + 1): column s holds fed token s + 1 (0 past the end), so a step's attention
        encodes the whole history of its row and a wrongly reordered beam shows up as a mismatch.
    """

    bos_id, eos_id, pad_id = BOS, EOS, PAD

    def __init__(self, distribution, vocab, dtype=torch.float64):
        self.distribution = lru_cache(maxsize=None)(distribution)  # (table, fed tuple) -> (V,) log-probs
        self.vocab, self.dtype = vocab, dtype
        self.calls = 0

    def initial_state(self, tables):
        tables = torch.as_tensor(tables, dtype=torch.long)
        n = tables.numel()
        return {
            "prefix": torch.full((n, MAX_STEPS + 1), -1, dtype=torch.long),
            "length": torch.zeros(n, dtype=torch.long),
            "table": tables,
        }

    def start(self, src, src_lengths):  # seq2seq-style: the first source token names the table
        return self.initial_state(src[:, 0])

    def step(self, prev_tokens, state):
        self.calls += 1
        n = prev_tokens.numel()
        prefix = state["prefix"].clone()
        prefix[torch.arange(n), state["length"]] = prev_tokens
        length = state["length"] + 1
        rows = [
            self.distribution(int(table), tuple(prefix[i, : int(length[i])].tolist()))
            for i, table in enumerate(state["table"])
        ]
        log_probs = torch.stack(rows).to(self.dtype)  # (N, V)
        attention = (prefix + 1).to(self.dtype)  # (N, S)
        state = {"prefix": prefix, "length": length, "table": state["table"], "attention": attention}
        return log_probs, state


def table_model(table, default, vocab=5):
    """A PrefixModel from a hand table {emitted prefix (BOS excluded): {token: probability}}."""

    def distribution(table_id, fed):
        probs = table.get(fed[1:], default)
        log_probs = torch.full((vocab,), -math.inf, dtype=torch.float64)
        for token, p in probs.items():
            log_probs[token] = math.log(p)
        return log_probs

    return PrefixModel(distribution, vocab)


class CoverageModel(PrefixModel):
    """A PrefixModel whose attention rows are distributions, as a seq2seq model's: over SOURCE_POSITIONS
    positions of which the first 2 + table % 4 are real (``state["valid"]``), random per (table, fed prefix)
    like the log-probabilities, 0 at padding."""

    def initial_state(self, tables):
        state = super().initial_state(tables)
        state["valid"] = torch.arange(SOURCE_POSITIONS) < (2 + state["table"] % 4).unsqueeze(1)  # (N, S)
        return state

    @staticmethod
    @cache
    def attention_row(table_id, fed):
        seed = zlib.crc32(repr(("attention", table_id, fed)).encode())
        scores = torch.randn(SOURCE_POSITIONS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        valid = torch.arange(SOURCE_POSITIONS) < 2 + table_id % 4
        return (scores * 2).masked_fill(~valid, -math.inf).softmax(0)

    def step(self, prev_tokens, state):
        log_probs, new_state = super().step(prev_tokens, state)
        rows = [
            self.attention_row(int(table), tuple(new_state["prefix"][i, : int(new_state["length"][i])].tolist()))
            for i, table in enumerate(new_state["table"])
        ]
        new_state["attention"] = torch.stack(rows).to(self.dtype)  # (N, S)
        new_state["valid"] = state["valid"]
        return log_probs, new_state


def random_model(vocab=7, eos_bias=(0.0, 1.0, -1.0), allowed=None, dtype=torch.float32, cls=PrefixModel):
    """A PrefixModel (or ``cls``) whose every (table, prefix) has its own random distribution (seeded by a CRC of
    the key, so reproducible). The EOS logit is shifted by eos_bias[table % 3] so that tables end at different
    times. ``allowed``: the tokens of nonzero probability (default: all)."""

    def distribution(table_id, fed):
        seed = zlib.crc32(repr((table_id, fed)).encode())
        logits = torch.randn(vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5
        logits[EOS] += eos_bias[table_id % len(eos_bias)]
        if allowed is not None:
            blocked = torch.ones(vocab, dtype=torch.bool)
            blocked[list(allowed)] = False
            logits[blocked] = -math.inf
        return logits.log_softmax(0).to(dtype)

    return cls(distribution, vocab, dtype)


class FixedModel:
    """Every row, every step: the same distribution. ``step`` returns a view of the model's own buffer, so a
    decoder that edited log_probs in place would corrupt it."""

    def __init__(self, probs):
        self.log_probs = torch.tensor(probs, dtype=torch.float64).log()

    def step(self, prev_tokens, state):
        return self.log_probs.expand(prev_tokens.numel(), -1), state


def tokens_of(hypothesis):
    return hypothesis.tokens.tolist()


def expected_attention(first, tokens, dtype=torch.float64):
    """The attention rows PrefixModel records for a hypothesis: step j was fed [first] + tokens[:j]."""
    rows = torch.zeros(len(tokens), MAX_STEPS + 1, dtype=dtype)
    fed = [first] + list(tokens)
    for j in range(len(tokens)):
        rows[j, : j + 1] = torch.tensor(fed[: j + 1], dtype=dtype) + 1
    return rows


def assert_same_hypotheses(got, expected):
    """Exact equality: tokens, scores, log-probs and attention."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert tokens_of(g) == tokens_of(e)
        assert g.score == e.score and g.log_prob == e.log_prob
        assert torch.equal(g.attention, e.attention)


# ----------------------------------------------------------------------------------------------------------
# Hand tables
# ----------------------------------------------------------------------------------------------------------

# Greedy trap. Greedy takes a (0.6) then can only reach eos with 0.4: p(a eos) = 0.6 * 0.4 = 0.24.
# b is worse first (0.4) but then ends with 0.9: p(b eos) = 0.4 * 0.9 = 0.36 > 0.24.
TRAP = {
    (): {A: 0.6, B: 0.4},
    (A,): {EOS: 0.4, A: 0.3, B: 0.3},
    (B,): {EOS: 0.9, A: 0.05, B: 0.05},
}
TRAP_DEFAULT = {EOS: 0.5, A: 0.25, B: 0.25}

# Short against long (tokens: eos, a). Every hypothesis of length <= 5 (max_len) is listed with
# log p, then score = log p / L^alpha ("avg") and log p / ((5 + L) / 6)^alpha ("gnmt"):
#
#   hypothesis     p                               log p     alpha=0.6  alpha=1.5  gnmt 1    gnmt 3
#   eos            0.55                            -0.5978   -0.5978    -0.5978    -0.5978   -0.5978
#   a eos          .45*.25 = 0.1125                -2.1848   -1.4414    -0.7724    -1.8727   -1.3759
#   a a eos        .45*.75*.25 = 0.084375          -2.4725   -1.2790    -0.4758    -1.8544   -1.0431
#   a a a eos      .45*.75*.75*.8 = 0.2025         -1.5970   -0.6951    -0.1996    -1.0647   -0.4732
#   a a a a eos    .45*.75*.75*.2*.5 = 0.0253125   -3.6765   -1.3997    -0.3288    -2.2059   -0.7941
#                  (the last eos forced at max_len = 5, scored with its p = 0.5)
#
# (4^0.6 = 2.2974, 4^1.5 = 8, 5^0.6 = 2.6265, (9/6)^3 = 3.375.) Unnormalised and at alpha = 0.6 "eos" wins;
# at alpha = 1.5 and with GNMT alpha = 3 the long "a a a eos" wins.
SHORT_LONG = {
    (): {EOS: 0.55, A: 0.45},
    (A,): {A: 0.75, EOS: 0.25},
    (A, A): {A: 0.75, EOS: 0.25},
    (A, A, A): {EOS: 0.8, A: 0.2},
    (A, A, A, A): {EOS: 0.5, A: 0.5},
}
SHORT_LONG_P = {
    (EOS,): 0.55,
    (A, EOS): 0.45 * 0.25,
    (A, A, EOS): 0.45 * 0.75 * 0.25,
    (A, A, A, EOS): 0.45 * 0.75 * 0.75 * 0.8,
    (A, A, A, A, EOS): 0.45 * 0.75 * 0.75 * 0.2 * 0.5,
}
EVEN = {EOS: 0.5, A: 0.5}


# ----------------------------------------------------------------------------------------------------------
# State helper and penalties
# ----------------------------------------------------------------------------------------------------------


def test_map_state_keeps_structure_and_passes_non_tensors():
    Pair = namedtuple("Pair", "h c")
    state = {"lstm": Pair(torch.ones(2, 3), torch.zeros(2, 3)), "layers": [torch.ones(2), 7], "name": "x",
             "nested": {"t": (torch.arange(2), None)}}  # fmt: skip
    doubled = map_state(lambda t: t * 2, state)
    assert isinstance(doubled["lstm"], Pair) and torch.equal(doubled["lstm"].h, torch.full((2, 3), 2.0))
    assert isinstance(doubled["layers"], list) and doubled["layers"][1] == 7 and doubled["name"] == "x"
    assert torch.equal(doubled["nested"]["t"][0], torch.tensor([0, 2])) and doubled["nested"]["t"][1] is None
    assert torch.equal(state["lstm"].h, torch.ones(2, 3))  # the input is not modified


def test_length_penalty_values():
    # "avg": L^alpha; 4^0.6 = exp(0.6 ln 4) = exp(0.8318) = 2.2974
    assert length_penalty(4, "avg", 0.6) == pytest.approx(2.2974, abs=1e-4)
    assert length_penalty(4, "avg", 0.0) == 1.0
    # GNMT (Wu et al. 2016): ((5 + L) / 6)^alpha; L = 7: 2^0.6 = 1.5157; L = 1: 1 whatever alpha
    assert length_penalty(7, "gnmt", 0.6) == pytest.approx(1.5157, abs=1e-4)
    assert length_penalty(1, "gnmt", 3.0) == 1.0
    assert length_penalty(13, "gnmt", 1.0) == pytest.approx(3.0)
    assert length_penalty(9, "none", 0.0) == 1.0
    lengths = torch.tensor([1, 7, 13])
    assert torch.allclose(length_penalty(lengths, "gnmt", 1.0), torch.tensor([1.0, 2.0, 3.0]))
    for name, alpha, message in [("wu", 0.6, "one of"), ("avg", -1.0, ">= 0"), ("none", 0.5, "no alpha")]:
        with pytest.raises(ValueError, match=message):
            length_penalty(3, name, alpha)


# ----------------------------------------------------------------------------------------------------------
# Beam search on hand tables
# ----------------------------------------------------------------------------------------------------------


def test_beam_search_escapes_greedy_trap_with_nbest_in_order():
    model = table_model(TRAP, TRAP_DEFAULT, vocab=6)
    state = model.initial_state([0])
    greedy = greedy_decode(model, state, max_len=6)
    assert greedy.tokens.tolist() == [[A, EOS]]
    assert greedy.scores.item() == pytest.approx(math.log(0.24))
    # K = 2, step 1: a eos (.36) and b eos (.24) are the two best candidates, so both finish; the live a a,
    # a b (.18) cannot beat .24 any more and the search stops.
    (hypotheses,) = beam_search(model, state, beam_size=2, n_best=2, max_len=6)
    assert [tokens_of(h) for h in hypotheses] == [[B, EOS], [A, EOS]]
    assert [h.log_prob for h in hypotheses] == pytest.approx([math.log(0.36), math.log(0.24)])
    assert [h.score for h in hypotheses] == [h.log_prob for h in hypotheses]  # alpha = 0
    assert hypotheses[0].log_prob > greedy.scores.item()


@pytest.mark.parametrize(
    ("penalty", "alpha", "expected_order"),
    [
        # orders read off the table above SHORT_LONG
        ("avg", 0.0, [(EOS,), (A, A, A, EOS), (A, EOS), (A, A, EOS), (A, A, A, A, EOS)]),
        ("none", 0.0, [(EOS,), (A, A, A, EOS), (A, EOS), (A, A, EOS), (A, A, A, A, EOS)]),
        ("avg", 0.6, [(EOS,), (A, A, A, EOS), (A, A, EOS), (A, A, A, A, EOS), (A, EOS)]),
        ("avg", 1.5, [(A, A, A, EOS), (A, A, A, A, EOS), (A, A, EOS), (EOS,), (A, EOS)]),
        ("gnmt", 1.0, [(EOS,), (A, A, A, EOS), (A, A, EOS), (A, EOS), (A, A, A, A, EOS)]),
        ("gnmt", 3.0, [(A, A, A, EOS), (EOS,), (A, A, A, A, EOS), (A, A, EOS), (A, EOS)]),
    ],
)
def test_length_penalty_ranks_hypotheses(penalty, alpha, expected_order):
    model = table_model(SHORT_LONG, EVEN)
    (hypotheses,) = beam_search(model, model.initial_state([0]), beam_size=5, n_best=5, max_len=5,
                                length_penalty=penalty, alpha=alpha)  # fmt: skip
    assert [tuple(tokens_of(h)) for h in hypotheses] == expected_order
    for h in hypotheses:
        tokens = tuple(tokens_of(h))
        lp = {"none": 1.0, "avg": len(tokens) ** alpha, "gnmt": ((5 + len(tokens)) / 6) ** alpha}[penalty]
        assert h.log_prob == pytest.approx(math.log(SHORT_LONG_P[tokens]), rel=1e-12)
        assert h.score == pytest.approx(math.log(SHORT_LONG_P[tokens]) / lp, rel=1e-12)


def test_large_alpha_prefers_longer_hypothesis_with_exact_stopping():
    model = table_model(SHORT_LONG, EVEN)
    state = model.initial_state([0])
    # After step 0, with n_best = 1, "eos" (-0.5978) fills the n-best and the only live hypothesis "a" has a
    # lower log-prob (log .45 = -0.7985). A stopping rule on raw log-probs would stop and return "eos"; under
    # alpha = 1.5 "a" may still finish with score up to -0.7985 / 5^1.5 = -0.0714, so the search goes on and
    # finds "a a a eos" (-0.1996 > -0.5978).
    (short,) = beam_search(model, state, beam_size=2, max_len=5, alpha=0.0)
    (mid,) = beam_search(model, state, beam_size=2, max_len=5, alpha=0.6)
    (long,) = beam_search(model, state, beam_size=2, max_len=5, alpha=1.5)
    assert tokens_of(short[0]) == [EOS] and short[0].score == pytest.approx(-0.5978, abs=1e-4)
    assert tokens_of(mid[0]) == [EOS] and mid[0].score == pytest.approx(-0.5978, abs=1e-4)
    assert tokens_of(long[0]) == [A, A, A, EOS]
    assert long[0].score == pytest.approx(math.log(0.2025) / 4**1.5)
    assert long[0].score == pytest.approx(-0.1996, abs=1e-4)
    assert long[0].log_prob == pytest.approx(math.log(0.2025))


def test_alpha_zero_stops_as_soon_as_nothing_can_improve():
    model = table_model(SHORT_LONG, EVEN)
    beam_search(model, model.initial_state([0]), beam_size=2, max_len=5)
    assert model.calls == 1  # after step 0, "eos" (.55) beats the live "a" (.45): no second step


def test_equal_scores_keep_the_earlier_hypothesis():
    # "eos" has p = .5, score log .5. "a a a a a a eos" has p = .5 * 1^5 * .5, log p = 2 log .5 exactly (the
    # log 1 = 0 terms add nothing), and under GNMT alpha = 1, lp(7) = (5 + 7) / 6 = 2 exactly: score log .5,
    # a tie in floating point too. The search cannot stop early here (the live "a" may still reach
    # log .5 / lp(7) > log .5), so the result shows the tie rule: the earlier finished hypothesis stays first,
    # which is what makes stopping at "cannot beat the worst n-best" exact.
    certain = {(A,) * j: {A: 1.0} for j in range(1, 6)}
    model = table_model({(): EVEN, **certain, (A,) * 6: EVEN}, EVEN)
    (hypotheses,) = beam_search(model, model.initial_state([0]), beam_size=2, n_best=2, max_len=7,
                                length_penalty="gnmt", alpha=1.0)  # fmt: skip
    assert [tokens_of(h) for h in hypotheses] == [[EOS], [A] * 6 + [EOS]]
    assert hypotheses[0].score == hypotheses[1].score == math.log(0.5)
    assert model.calls == 7


def test_max_len_forces_eos():
    model = table_model({}, {A: 0.9, EOS: 0.1})
    state = model.initial_state([0, 0])
    greedy = greedy_decode(model, state, max_len=3)
    # a (.9), a (.9), then EOS forced at the 3rd token and scored with its own p = .1: log(.081)
    assert greedy.tokens.tolist() == [[A, A, EOS]] * 2 and greedy.lengths.tolist() == [3, 3]
    assert greedy.scores.tolist() == pytest.approx([math.log(0.081)] * 2)
    # K = 3 keeps every path: eos (.1), a eos (.09), a a eos (.081, forced)
    hypotheses = beam_search(model, state, beam_size=3, n_best=3, max_len=3)[0]
    assert [tokens_of(h) for h in hypotheses] == [[EOS], [A, EOS], [A, A, EOS]]
    assert [h.log_prob for h in hypotheses] == pytest.approx([math.log(0.1), math.log(0.09), math.log(0.081)])
    (only,) = beam_search(model, state, beam_size=1, max_len=3)[0]
    assert tokens_of(only) == [A, A, EOS] and only.log_prob == pytest.approx(math.log(0.081))
    sampled = sample_decode(model, state, max_len=3, generator=torch.Generator().manual_seed(0))
    assert (sampled.lengths <= 3).all()
    last = sampled.tokens.gather(1, (sampled.lengths - 1).unsqueeze(1))
    assert (last == EOS).all()


def test_min_len_suppresses_eos():
    table = {(): {EOS: 0.6, A: 0.4}, (A,): {EOS: 0.7, A: 0.3}, (A, A): {EOS: 0.8, A: 0.2},
             (A, A, A): {EOS: 0.9, A: 0.1}}  # fmt: skip
    model = table_model(table, EVEN)
    state = model.initial_state([0])
    assert greedy_decode(model, state, max_len=6).tokens.tolist() == [[EOS]]
    # EOS impossible at lengths 1 and 2: a (.4), a (.3), then eos (.8); scores stay the model's own
    # log-probs (no renormalisation): log(.4 * .3 * .8) = log(.096)
    greedy = greedy_decode(model, state, max_len=6, min_len=3)
    assert greedy.tokens.tolist() == [[A, A, EOS]] and greedy.scores.item() == pytest.approx(math.log(0.096))
    # K = 2: a a eos (.096) finishes at step 2, a a a eos (.4*.3*.2*.9 = .0216) at step 3; then the live
    # a a a a (.0024) cannot beat .0216.
    hypotheses = beam_search(model, state, beam_size=2, n_best=2, max_len=6, min_len=3)[0]
    assert [tokens_of(h) for h in hypotheses] == [[A, A, EOS], [A, A, A, EOS]]
    assert [h.log_prob for h in hypotheses] == pytest.approx([math.log(0.096), math.log(0.0216)])
    sampled = sample_decode(model, model.initial_state([0] * 50), max_len=6, min_len=3,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert (sampled.lengths >= 3).all()


# ----------------------------------------------------------------------------------------------------------
# Beam search on random tables
# ----------------------------------------------------------------------------------------------------------


def test_beam_size_one_equals_greedy_on_random_tables():
    model = random_model()
    state = model.initial_state(list(range(9)))
    greedy = greedy_decode(model, state, max_len=8)
    beams = beam_search(model, state, beam_size=1, max_len=8)
    assert greedy.lengths.unique().numel() > 1  # rows end at different times
    for n, (hypothesis,) in enumerate(beams):
        length = int(greedy.lengths[n])
        assert tokens_of(hypothesis) == greedy.tokens[n, :length].tolist()
        assert hypothesis.log_prob == greedy.scores[n].item()  # same sums in the same order: exact
        assert torch.equal(hypothesis.attention, greedy.attention[n, :length])
        assert (greedy.tokens[n, length:] == PAD).all() and (greedy.attention[n, length:] == 0).all()


@pytest.mark.parametrize("ngram", [1, 2, 3])
def test_beam_size_one_equals_greedy_with_ngram_blocking(ngram):
    # n-gram blocking applies to greedy decoding too, so K = 1 still equals it (per-sentence limits too).
    # Three tokens and a rare EOS: long outputs that would repeat n-grams.
    model = random_model(vocab=6, allowed=(EOS, A, B), eos_bias=(-2.0,), cls=CoverageModel, dtype=torch.float64)
    state = model.initial_state(list(range(9)))
    limits = torch.tensor([3 + t for t in range(9)])
    greedy = greedy_decode(model, state, max_len=limits, no_repeat_ngram_size=ngram)
    beams = beam_search(model, state, beam_size=1, max_len=limits, no_repeat_ngram_size=ngram)
    assert not torch.equal(greedy.tokens, greedy_decode(model, state, max_len=limits).tokens)  # blocking acted
    for n, (hypothesis,) in enumerate(beams):
        length = int(greedy.lengths[n])
        assert length <= limits[n]
        assert tokens_of(hypothesis) == greedy.tokens[n, :length].tolist()
        assert hypothesis.log_prob == greedy.scores[n].item()


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_beam_size_one_with_coverage_penalty_never_scores_below_greedy(beta):
    # Like a length penalty, the coverage penalty can let a longer hypothesis win even at K = 1, so K = 1 is
    # no longer greedy decoding; but greedy's output is among the hypotheses it finishes, so it never loses to it.
    model = random_model(cls=CoverageModel, dtype=torch.float64)
    state = model.initial_state(list(range(9)))
    greedy = greedy_decode(model, state, max_len=8).hypotheses()
    beams = beam_search(model, state, beam_size=1, max_len=8, coverage_penalty=beta)
    differ = 0
    for n, ((hypothesis,), (plain,)) in enumerate(zip(beams, greedy, strict=True)):
        greedy_score = plain.log_prob + own_coverage_penalty(model, n, plain, beta)
        assert hypothesis.score >= greedy_score - 1e-12
        differ += tokens_of(hypothesis) != tokens_of(plain)
    assert differ > 0 or beta < 2.0  # the strong penalty does change outputs here


def test_ngram_blocking_by_hand():
    # Every step p(eos) = .1, p(a) = .7, p(b) = .2 (ids 0, 1, 2): greedy repeats a; blocking n-grams:
    # n = 1: a b eos (no token twice);
    # n = 2: a a, then a (a a again) is banned -> b; after b, a (b a is new); after a, both a (a a) and
    #        b (a b) are banned -> eos: a a b a eos;
    # n = 3: a a a, b (a a a banned), a, a (b a a is new), then a a a and a a b are banned: a a a b a a eos.
    model = FixedModel([0.1, 0.7, 0.2])
    state = {"x": torch.zeros(1)}
    expected = {0: [1] * 9 + [0], 1: [1, 2, 0], 2: [1, 1, 2, 1, 0], 3: [1, 1, 1, 2, 1, 1, 0]}
    for n, tokens in expected.items():
        result = greedy_decode(model, state, bos_id=0, eos_id=0, max_len=10, no_repeat_ngram_size=n)
        assert result.tokens[0, : int(result.lengths[0])].tolist() == tokens
        log_p = {0: math.log(0.1), 1: math.log(0.7), 2: math.log(0.2)}
        assert result.scores[0].item() == pytest.approx(sum(log_p[token] for token in tokens))
        (best, *_) = beam_search(model, state, bos_id=0, eos_id=0, beam_size=4, n_best=4, max_len=10,
                                 no_repeat_ngram_size=n)[0]  # fmt: skip
        assert not (n and has_repeated_ngram(tokens_of(best), n))


def test_sampling_never_repeats_a_blocked_ngram():
    model = random_model(vocab=6, allowed=(EOS, A, B), eos_bias=(-3.0,), dtype=torch.float64)
    state = model.initial_state([0] * 64)
    for n in (1, 2, 3):
        result = sample_decode(model, state, max_len=12, no_repeat_ngram_size=n,
                               generator=torch.Generator().manual_seed(n))  # fmt: skip
        rows = [result.tokens[i, : int(length)].tolist() for i, length in enumerate(result.lengths)]
        assert not any(has_repeated_ngram(row, n) for row in rows)
    free = sample_decode(model, state, max_len=12, generator=torch.Generator().manual_seed(0))
    rows = [row[: int(length)].tolist() for row, length in zip(free.tokens, free.lengths, strict=True)]
    assert any(has_repeated_ngram(row, 2) for row in rows)  # without blocking, the same model does repeat


def test_coverage_penalty_values():
    # Wu et al. 2016: cp = beta * sum_i log(min(sum_j p_ij, 1))
    attention = torch.tensor([[0.5, 0.45, 0.05, 0.0], [0.9, 0.05, 0.05, 0.0]], dtype=torch.float64)  # (L=2, S=4)
    valid = torch.tensor([True, True, True, False])
    # totals 1.4, 0.5, 0.1, (padding): log 1 + log 0.5 + log 0.1
    assert coverage_penalty(attention, 0.4, valid).item() == pytest.approx(0.4 * (math.log(0.5) + math.log(0.1)))
    assert coverage_penalty(attention, 0.0, valid).item() == 0.0
    # a real position never attended counts log(COVERAGE_FLOOR), not -inf
    everywhere = coverage_penalty(attention, 1.0).item()
    assert everywhere == pytest.approx(math.log(0.5) + math.log(0.1) + math.log(COVERAGE_FLOOR))
    batched = coverage_penalty(attention.expand(3, 2, 4), 1.0, valid.expand(3, 4))  # (3,)
    assert batched.shape == (3,) and torch.allclose(batched, torch.full((3,), math.log(0.05), dtype=torch.float64))


def test_length_limits_follow_each_sentence():
    assert length_limits(torch.tensor([3, 4, 1]), 1.5, 2).tolist() == [6, 8, 3]  # floor(1.5 * len + 2)
    assert length_limits(torch.tensor([3, 4]), 0.0, 7).tolist() == [7, 7]
    for a, b in ((0.0, 0), (-1.0, 5), (1.0, -1), (math.inf, 1)):
        with pytest.raises(ValueError, match="max_len"):
            length_limits(torch.tensor([3, 4]), a, b)


def test_per_sentence_max_len_equals_each_sentence_alone():
    model = random_model(eos_bias=(-4.0,), dtype=torch.float64)  # rarely ends: the limits show
    tables, limits = [0, 1, 2, 3], [2, 7, 4, 1]
    greedy = greedy_decode(model, model.initial_state(tables), max_len=torch.tensor(limits))
    sampled = sample_decode(model, model.initial_state(tables), max_len=torch.tensor(limits), temperature=0)
    assert torch.equal(sampled.tokens, greedy.tokens)
    beams = beam_search(model, model.initial_state(tables), max_len=torch.tensor(limits), beam_size=3, n_best=2)
    assert greedy.lengths.tolist() == limits  # every row ran to its own limit, its last token a forced EOS
    for n, (table, limit) in enumerate(zip(tables, limits, strict=True)):
        alone = greedy_decode(model, model.initial_state([table]), max_len=limit)
        assert greedy.tokens[n, :limit].tolist() == alone.tokens[0].tolist()
        assert greedy.scores[n].item() == alone.scores[0].item()
        assert_same_hypotheses(beams[n], beam_search(model, model.initial_state([table]), max_len=limit,
                                                     beam_size=3, n_best=2)[0])  # fmt: skip


def has_repeated_ngram(tokens, n):
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(ngrams) != len(set(ngrams))


def own_coverage_penalty(model, table, hypothesis, beta):
    """cp of Wu et al. 2016 written out from the hypothesis' attention and the table's real positions."""
    real = 2 + table % 4
    totals = hypothesis.attention.sum(0)[:real].tolist()
    return beta * sum(math.log(max(min(total, 1.0), COVERAGE_FLOOR)) for total in totals)


@pytest.mark.parametrize(
    ("penalty", "alpha", "beta", "ngram", "own_limits"),
    [
        ("avg", 0.0, 0.0, 0, False),
        ("avg", 0.6, 0.0, 0, False),
        ("gnmt", 1.0, 0.0, 0, False),
        ("avg", 0.0, 0.0, 0, True),
        ("avg", 0.0, 1.0, 0, False),
        ("avg", 0.0, 0.0, 2, False),
        ("gnmt", 1.0, 0.4, 2, True),
        ("avg", 0.6, 2.0, 1, True),
    ],
)
def test_sentence_result_independent_of_batch(penalty, alpha, beta, ngram, own_limits):
    # A sentence's n-best is the same alone or in any batch, with the coverage penalty, n-gram blocking and a
    # length limit of its own (max_len as a per-sentence tensor).
    model = random_model(cls=CoverageModel)
    options = dict(beam_size=3, n_best=3, length_penalty=penalty, alpha=alpha, coverage_penalty=beta,
                   no_repeat_ngram_size=ngram)  # fmt: skip

    def limit(table):
        return 4 + 2 * (table % 3) if own_limits else 9

    alone = {t: beam_search(model, model.initial_state([t]), max_len=limit(t), **options)[0] for t in range(7)}
    for tables in ([0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0], [3, 0], [2, 2, 5], [1, 4, 0, 6, 3]):
        limits = torch.tensor([limit(t) for t in tables]) if own_limits else 9
        batch = beam_search(model, model.initial_state(tables), max_len=limits, **options)
        for table, hypotheses in zip(tables, batch, strict=True):
            assert_same_hypotheses(hypotheses, alone[table])
    lengths = {len(h) for hypotheses in alone.values() for h in hypotheses}
    assert len(lengths) > 2  # neighbours do finish at different steps
    for table, hypotheses in alone.items():
        for h in hypotheses:
            assert len(h) <= limit(table)
            assert not (ngram and has_repeated_ngram(tokens_of(h), ngram))
            expected = h.log_prob / length_penalty(len(h), penalty, alpha)
            expected += own_coverage_penalty(model, table, h, beta)
            assert h.score == pytest.approx(expected, rel=1e-6, abs=1e-6)


def brute_force(model, table, penalty, alpha, min_len, beta=0.0, ngram=0, max_len=4):
    """Every output of tokens a, b ending in EOS within max_len, without a repeated n-gram, best score first:
    (score, log p, tokens), score = log p / lp + cp with cp written out from the model's attention rows."""
    real = 2 + table % 4
    outputs = []
    for length in range(max(min_len, 1), max_len + 1):
        for body in itertools.product((A, B), repeat=length - 1):
            tokens, fed, log_prob = body + (EOS,), (BOS,), 0.0
            if ngram and has_repeated_ngram(tokens, ngram):
                continue
            totals = [0.0] * real
            for token in tokens:  # the step that emits `token` was fed `fed`
                log_prob += model.distribution(table, fed)[token].item()
                if beta:
                    totals = [x + a for x, a in zip(totals, model.attention_row(table, fed).tolist(), strict=False)]
                fed = fed + (token,)
            cp = beta * sum(math.log(max(min(total, 1.0), COVERAGE_FLOOR)) for total in totals) if beta else 0.0
            outputs.append((log_prob / length_penalty(length, penalty, alpha) + cp, log_prob, tokens))
    return sorted(outputs, reverse=True)


@pytest.mark.parametrize(
    ("penalty", "alpha", "min_len", "beta", "ngram"),
    [
        ("avg", 0.0, 0, 0.0, 0),
        ("avg", 0.6, 0, 0.0, 0),
        ("avg", 2.0, 0, 0.0, 0),
        ("gnmt", 1.0, 0, 0.0, 0),
        ("avg", 0.0, 2, 0.0, 0),
        ("avg", 0.0, 0, 1.0, 0),
        ("gnmt", 1.0, 0, 0.3, 0),
        ("avg", 0.0, 0, 0.0, 2),
        ("avg", 0.6, 2, 0.0, 1),
        ("avg", 0.6, 0, 1.0, 2),
    ],
)
def test_wide_beam_is_exhaustive_search(penalty, alpha, min_len, beta, ngram):
    # Tokens eos, a, b only and max_len = 4: at most 8 live prefixes and 12 candidates a step, so K = 16
    # keeps everything and the n-best must be the brute-force ranking of all 1 + 2 + 4 + 8 = 15 outputs
    # (the "a b c" then eos forced at length 4 included), less those that repeat an n-gram, scored with the
    # coverage penalty. The 3-best of a search that may stop early must be the first 3: the stopping rule
    # never stops a sentence that could still improve.
    model = random_model(vocab=6, allowed=(EOS, A, B), dtype=torch.float64, cls=CoverageModel)
    options = dict(beam_size=16, max_len=4, min_len=min_len, length_penalty=penalty, alpha=alpha,
                   coverage_penalty=beta, no_repeat_ngram_size=ngram)  # fmt: skip
    reranked = 0
    for table in range(4):
        outputs = brute_force(model, table, penalty, alpha, min_len, beta, ngram)
        (hypotheses,) = beam_search(model, model.initial_state([table]), n_best=len(outputs), **options)
        assert [tuple(tokens_of(h)) for h in hypotheses] == [tokens for _, _, tokens in outputs]
        assert [h.score for h in hypotheses] == pytest.approx([score for score, _, _ in outputs], rel=1e-12)
        assert [h.log_prob for h in hypotheses] == pytest.approx([lp for _, lp, _ in outputs], rel=1e-12)
        (best,) = beam_search(model, model.initial_state([table]), n_best=3, **options)
        assert [tuple(tokens_of(h)) for h in best] == [tokens for _, _, tokens in outputs[:3]]
        plain = brute_force(model, table, penalty, alpha, min_len, 0.0, ngram)
        reranked += [tokens for _, _, tokens in plain] != [tokens for _, _, tokens in outputs]
    assert reranked > 0 or beta == 0  # the coverage penalty does change the ranking


class StepModule(torch.nn.Module):
    """A test model as a torch module (an Ensemble's members are modules)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.bos_id, self.eos_id, self.pad_id = inner.bos_id, inner.eos_id, inner.pad_id

    def start(self, src, src_lengths):
        return self.inner.start(src, src_lengths)

    def step(self, prev_tokens, state):
        return self.inner.step(prev_tokens, state)


def test_ensemble_search_is_the_search_of_the_mean_distribution():
    # Two different random models over eos, a, b; the mixture p = (p1 + p2) / 2 written out as a third model.
    # With K = 16 the beam search is exhaustive (see above), so the ensemble's n-best must be the brute-force
    # ranking under the mixture, and the attention it records the members' mean.
    first = random_model(vocab=6, allowed=(EOS, A, B), dtype=torch.float64)
    second = PrefixModel(lambda table, fed: first.distribution(table + 7, fed), 6)  # another seed per prefix
    mixture = PrefixModel(lambda table, fed: torch.logaddexp(first.distribution(table, fed),
                                                             second.distribution(table, fed)) - math.log(2), 6)
    ensemble = Ensemble([StepModule(first), StepModule(second)])
    assert (ensemble.bos_id, ensemble.eos_id, ensemble.pad_id) == (BOS, EOS, PAD)
    differs = 0
    for table in range(3):
        outputs = brute_force(mixture, table, "avg", 0.0, 0)
        differs += [tokens for _, _, tokens in outputs] != [tokens for _, _, tokens in brute_force(first, table, "avg",
                                                                                                   0.0, 0)]
        src = torch.full((1, 2), table)
        (hypotheses,) = translate(ensemble, src, torch.tensor([2]), beam_size=16, n_best=len(outputs), max_len=4)
        assert [tuple(tokens_of(h)) for h in hypotheses] == [tokens for _, _, tokens in outputs]
        assert [h.log_prob for h in hypotheses] == pytest.approx([lp for _, lp, _ in outputs], rel=1e-12)
        for h in hypotheses:  # both members record the same history rows, so their mean is that row
            assert torch.equal(h.attention, expected_attention(BOS, tokens_of(h)))
    assert differs  # the mixture ranks differently from its first member


def test_seq2seq_ensembles_average_probabilities_and_one_with_itself_decodes_as_the_model():
    from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig

    models = []
    for seed, decoder in ((0, "luong"), (1, "bahdanau")):
        torch.manual_seed(seed)
        models.append(Seq2Seq.build(Seq2SeqConfig(12, 12, embedding_size=16, hidden_size=32, decoder=decoder)).eval())
    src, lengths, _ = reversal_batch(torch.Generator().manual_seed(1), 8)
    ensemble = Ensemble(models).eval()
    prev = torch.full((8,), BOS)
    with torch.no_grad():
        log_probs, state = ensemble.step(prev, ensemble.start(src, lengths))
        (first, first_state), (second, _) = (model.step(prev, model.start(src, lengths)) for model in models)
    assert torch.allclose(log_probs, torch.log((first.exp() + second.exp()) / 2), atol=1e-6)
    assert torch.allclose(state["attention"], (first_state["attention"] + state["members"][1]["attention"]) / 2)

    alone = translate(models[0], src, lengths, beam_size=4, n_best=2, max_len=12)
    twice = translate(Ensemble([models[0], models[0]]).eval(), src, lengths, beam_size=4, n_best=2, max_len=12)
    for got, want in zip(twice, alone, strict=True):
        assert [tokens_of(h) for h in got] == [tokens_of(h) for h in want]
        assert [h.log_prob for h in got] == pytest.approx([h.log_prob for h in want], abs=1e-5)
        assert torch.allclose(got[0].attention, want[0].attention)


def test_ensemble_mistakes_raise_value_errors():
    model = StepModule(random_model())
    with pytest.raises(ValueError, match="at least two models"):
        Ensemble([model])
    other = StepModule(random_model())
    other.eos_id = 9
    with pytest.raises(ValueError, match="share \\(bos_id, eos_id, pad_id\\)"):
        Ensemble([model, other])


def test_attention_is_recorded_and_follows_the_beam():
    model = random_model(vocab=6, dtype=torch.float64)
    state = model.initial_state([0, 1, 2, 3])
    results = beam_search(model, state, beam_size=4, n_best=4, max_len=7, alpha=0.6)
    reordered = 0
    for hypotheses in results:
        for h in hypotheses:
            assert h.attention.shape == (len(h), MAX_STEPS + 1)
            assert torch.equal(h.attention, expected_attention(BOS, tokens_of(h)))
        # the beam did reorder: the best hypotheses do not all extend the first best prefix
        reordered += len({tuple(tokens_of(h)[:1]) for h in hypotheses}) > 1
    assert reordered > 0
    greedy = greedy_decode(model, state, max_len=7)
    for n in range(4):
        length = int(greedy.lengths[n])
        expected = expected_attention(BOS, greedy.tokens[n, :length].tolist())
        assert torch.equal(greedy.attention[n, :length], expected)


def test_models_without_attention_give_none():
    model = FixedModel([0.1, 0.3, 0.6])  # eos_id = 1
    state = {"hidden": torch.zeros(2, 4)}
    (hypotheses, _) = beam_search(model, state, bos_id=0, eos_id=1, beam_size=2, n_best=2, max_len=3)
    # p(0) = .1, p(eos = 1) = .3, p(2) = .6 at every step: "eos" .3 > "2 eos" .18 > "2 2 eos" .108
    assert [tokens_of(h) for h in hypotheses] == [[1], [2, 1]] and hypotheses[0].attention is None
    assert greedy_decode(model, state, bos_id=0, eos_id=1, max_len=3).attention is None


def test_per_row_first_token_for_language_models():
    # An LM continuing a prompt feeds each row's last prompt token: bos_id as a (N,) tensor.
    model = random_model(dtype=torch.float64)
    state = model.initial_state([5, 5])
    first = torch.tensor([A, B])
    batch = beam_search(model, state, bos_id=first, beam_size=3, n_best=2, max_len=6)
    greedy = greedy_decode(model, state, bos_id=first, max_len=6)
    for n, token in enumerate([A, B]):
        single = model.initial_state([5])
        (alone,) = beam_search(model, single, bos_id=token, beam_size=3, n_best=2, max_len=6)
        assert_same_hypotheses(batch[n], alone)
        assert torch.equal(batch[n][0].attention, expected_attention(token, tokens_of(batch[n][0])))
        greedy_alone = greedy_decode(model, single, bos_id=token, max_len=6)
        length = int(greedy_alone.lengths[0])
        assert greedy.tokens[n, :length].tolist() == greedy_alone.tokens[0, :length].tolist()
        assert greedy.scores[n].item() == greedy_alone.scores[0].item()
    assert not torch.equal(greedy.tokens[0], greedy.tokens[1])  # the first token does matter


def test_translate_runs_start_then_the_chosen_method():
    model = random_model(dtype=torch.float64)
    src = torch.tensor([[1, 4, 4], [2, 5, 0]])
    src_lengths = torch.tensor([3, 2])
    state = model.start(src, src_lengths)
    beams = translate(model, src, src_lengths, beam_size=3, n_best=2, alpha=0.6)
    # the default limit is 2 * (each sentence's own source length) + 10
    limits = torch.tensor([2 * 3 + 10, 2 * 2 + 10])
    expected = beam_search(model, state, beam_size=3, n_best=2, alpha=0.6, max_len=limits)
    for got, want in zip(beams, expected, strict=True):
        assert_same_hypotheses(got, want)
    greedy = translate(model, src, src_lengths, method="greedy", max_len=5)
    reference = greedy_decode(model, state, max_len=5)
    for n, (hypothesis,) in enumerate(greedy):
        assert tokens_of(hypothesis) == reference.tokens[n, : int(reference.lengths[n])].tolist()
        assert hypothesis.score == hypothesis.log_prob == reference.scores[n].item()
    with pytest.raises(ValueError, match="method"):
        translate(model, src, src_lengths, method="viterbi")


# ----------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------

DRAWS = 20000


def draw(probs, **options):
    """DRAWS independent one-token samples from a fixed distribution, as frequencies (V,)."""
    model = FixedModel(probs)
    before = model.log_probs.clone()
    result = sample_decode(model, {"row": torch.zeros(DRAWS)}, bos_id=0, eos_id=None, max_len=1,
                           generator=torch.Generator().manual_seed(1234), **options)  # fmt: skip
    assert torch.equal(model.log_probs, before)  # the model's buffer was not edited
    return torch.bincount(result.tokens[:, 0], minlength=len(probs)).double() / DRAWS


def assert_frequencies(frequencies, expected):
    # Each frequency is a mean of DRAWS Bernoulli(q) draws: standard deviation sqrt(q (1 - q) / DRAWS)
    # (<= 0.0035). A 5-sigma band has a false-alarm probability < 1e-6 per token for an arbitrary seed (the
    # seed is fixed, so the test is deterministic); tokens with q = 0 must never appear.
    expected = torch.tensor(expected, dtype=torch.float64)
    sigma = (expected * (1 - expected) / DRAWS).sqrt()
    assert (frequencies[expected == 0] == 0).all()
    assert ((frequencies - expected).abs() <= 5 * sigma + 1e-12).all(), (frequencies, expected)


P = [0.4, 0.25, 0.15, 0.1, 0.05, 0.05]


def test_top_k_never_leaves_the_top_k():
    frequencies = draw(P, top_k=3)
    # top 3: .4, .25, .15 (mass .8), renormalised: .5, .3125, .1875
    assert_frequencies(frequencies, [0.5, 0.3125, 0.1875, 0, 0, 0])
    assert_frequencies(draw(P, top_k=1), [1, 0, 0, 0, 0, 0])
    assert_frequencies(draw(P, top_k=100), P)  # k >= V: no filtering


def test_top_p_keeps_smallest_set_reaching_p():
    # masses of the top 1..4: .4, .65, .8, .9. p = .7: .65 < .7 so the third token is needed (mass .8 >= .7)
    expected = [0.4 / 0.8, 0.25 / 0.8, 0.15 / 0.8, 0, 0, 0]
    assert torch.allclose(filter_log_probs(torch.tensor([P]).log(), top_p=0.7).exp()[0],
                          torch.tensor(expected, dtype=torch.float32))  # fmt: skip
    assert_frequencies(draw(P, top_p=0.7), expected)
    assert_frequencies(draw(P, top_p=0.3), [1, 0, 0, 0, 0, 0])  # .4 >= .3 already
    assert_frequencies(draw(P, top_p=0.85), [0.4 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.1 / 0.9, 0, 0])
    # top-k then top-p: top 2 renormalised are .615, .385; p = .6 keeps only the first
    assert_frequencies(draw(P, top_k=2, top_p=0.6), [1, 0, 0, 0, 0, 0])


def test_temperature_sharpens_and_flattens():
    p = [0.5, 0.3, 0.2]
    # T = 0.5: q ∝ p^2 = .25, .09, .04 (sum .38) -> .6579, .2368, .1053
    sharp = draw(p, temperature=0.5)
    assert_frequencies(sharp, [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38])
    # T = 2: q ∝ p^0.5 = .7071, .5477, .4472 (sum 1.7020) -> .4155, .3218, .2628
    flat = draw(p, temperature=2.0)
    root = [x**0.5 for x in p]
    assert_frequencies(flat, [x / sum(root) for x in root])
    assert sharp[0] > 0.5 > flat[0] and flat[2] > 0.2 > sharp[2]
    assert_frequencies(draw(p), p)  # T = 1: the model's own distribution


def test_temperature_zero_is_greedy_and_sampling_is_reproducible():
    model = random_model()
    state = model.initial_state(list(range(6)))
    greedy = greedy_decode(model, state, max_len=8)
    cold = sample_decode(model, state, max_len=8, temperature=0.0, top_k=2)
    assert torch.equal(cold.tokens, greedy.tokens) and torch.equal(cold.scores, greedy.scores)

    def sample(seed):
        generator = torch.Generator().manual_seed(seed)
        return sample_decode(model, state, max_len=8, top_p=0.9, generator=generator)

    first, again, other = sample(7), sample(7), sample(8)
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.scores, again.scores)
    assert not torch.equal(first.tokens, other.tokens)
    # scores are the model's log-probs of the drawn tokens
    for n in range(6):
        fed, total = (BOS,), 0.0
        for token in first.tokens[n, : int(first.lengths[n])].tolist():
            total += model.distribution(n, fed)[token].item()
            fed += (token,)
        assert first.scores[n].item() == pytest.approx(total, rel=1e-5)


# ----------------------------------------------------------------------------------------------------------
# User mistakes
# ----------------------------------------------------------------------------------------------------------


def test_bad_arguments_raise_value_error():
    model = table_model(TRAP, TRAP_DEFAULT, vocab=6)
    state = model.initial_state([0, 0])
    cases = [
        (lambda: beam_search(model, state, beam_size=2, n_best=3, max_len=5), "n_best"),
        (lambda: beam_search(model, state, beam_size=0, max_len=5), "beam_size"),
        (lambda: beam_search(model, state, max_len=5, length_penalty="wu"), "length_penalty"),
        (lambda: beam_search(model, state, max_len=5, alpha=-0.5), "alpha"),
        (lambda: greedy_decode(model, state, max_len=3, min_len=4), "min_len"),
        (lambda: greedy_decode(model, state, max_len=0), "max_len"),
        (lambda: sample_decode(model, state, max_len=3, temperature=-1.0), "temperature"),
        (lambda: sample_decode(model, state, max_len=3, top_p=0.0), "top_p"),
        (lambda: sample_decode(model, state, max_len=3, top_k=0), "top_k"),
        (lambda: greedy_decode(model, {**state, "table": torch.zeros(3)}, max_len=3), r"state\['table'\]"),
        (lambda: greedy_decode(FixedModel([0.5, 0.5]), {}, max_len=3), "bos_id"),
        (lambda: beam_search(FixedModel([0.5, 0.5]), {"x": torch.zeros(2)}, bos_id=0, max_len=3), "eos_id"),
        (lambda: greedy_decode(FixedModel([0.5, 0.5]), {}, bos_id=0, max_len=3), "batch size"),
        (lambda: beam_search(model, state, max_len=5, coverage_penalty=-1.0), "coverage_penalty"),
        (lambda: beam_search(model, state, max_len=5, no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
        (lambda: greedy_decode(model, state, max_len=5, no_repeat_ngram_size=1.5), "no_repeat_ngram_size"),
        (lambda: greedy_decode(model, state, max_len=torch.tensor([3, 4, 5])), "max_len"),
        (lambda: beam_search(model, state, max_len=torch.tensor([3.0, 4.0])), "max_len"),
        (lambda: beam_search(model, state, max_len=torch.tensor([3, 0])), "max_len"),
        (lambda: greedy_decode(model, state, max_len=torch.tensor([3, 5]), min_len=4), "min_len"),
        (lambda: beam_search(FixedModel([0.5, 0.5]), {"x": torch.zeros(2)}, bos_id=0, eos_id=1, max_len=3,
                             coverage_penalty=0.5), "attention"),
        (lambda: translate(model, torch.tensor([[0, 4]]), torch.tensor([2]), max_len_a=0.0, max_len_b=0), "max_len"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()

    class WrongShape:
        def step(self, prev_tokens, state):
            return torch.zeros(prev_tokens.numel() + 1, 4), state

    with pytest.raises(ValueError, match=r"log_probs of shape \(2, V\)"):
        greedy_decode(WrongShape(), {"x": torch.zeros(2)}, bos_id=0, eos_id=1, max_len=3)


# ----------------------------------------------------------------------------------------------------------
# A trained seq2seq model
# ----------------------------------------------------------------------------------------------------------


def reversal_batch(generator, n):
    """Sources of 3..7 tokens from 4..11 and their reversals as targets (BOS ... EOS), padded with 0."""
    lengths = torch.randint(3, 8, (n,), generator=generator)
    src = torch.zeros(n, 7, dtype=torch.long)
    tgt = torch.zeros(n, 9, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        tokens = torch.randint(4, 12, (length,), generator=generator)
        src[i, :length] = tokens
        tgt[i, 0], tgt[i, 1 : length + 1], tgt[i, length + 1] = BOS, tokens.flip(0), EOS
    return src, lengths, tgt


def train_reversal_model():
    from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig

    torch.manual_seed(0)
    model = Seq2Seq.build(Seq2SeqConfig(12, 12, embedding_size=16, hidden_size=32))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        src, lengths, tgt = reversal_batch(generator, 32)
        logits = model(src, lengths, tgt[:, :-1])  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_beam_search_on_a_trained_seq2seq_model():
    # A few seconds: 60 Adam steps on the reversal task leave the model good but unsure, where beam search
    # matters. One thread: tiny matrices gain nothing from more, and the machine is shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_reversal_model()
    finally:
        torch.set_num_threads(threads)
    model.eval()

    src, lengths, _ = reversal_batch(torch.Generator().manual_seed(1), 24)
    state = model.start(src, lengths)
    greedy = greedy_decode(model, state, max_len=12)
    beams = beam_search(model, state, beam_size=4, n_best=2, max_len=12)
    gains = [hypotheses[0].log_prob - greedy.scores[n].item() for n, hypotheses in enumerate(beams)]
    # Not a theorem (the greedy path can fall off a beam), but what a working beam search does on a trained
    # model: never worse than greedy here, and strictly better on some sentences.
    assert min(gains) >= -1e-5 and max(gains) > 0.01
    for n, hypotheses in enumerate(beams):
        assert hypotheses[0].score >= hypotheses[1].score
        for h in hypotheses:  # attention rows are distributions over the real source positions
            assert h.attention.shape == (len(h), src.size(1))
            assert torch.allclose(h.attention.sum(1), torch.ones(len(h)), atol=1e-5)
            assert (h.attention[:, int(lengths[n]) :] == 0).all()

    ones = beam_search(model, state, beam_size=1, max_len=12)
    for n, (h,) in enumerate(ones):
        assert tokens_of(h) == greedy.tokens[n, : int(greedy.lengths[n])].tolist()
        assert h.log_prob == pytest.approx(greedy.scores[n].item(), abs=1e-5)

    # A sentence alone or among others: same output (scores to float tolerance: the model's matrix
    # products may round differently for another batch size).
    for n in (0, 5, 17):
        (alone,) = translate(model, src[n : n + 1], lengths[n : n + 1], beam_size=4, n_best=2, max_len=12)
        for got, want in zip(alone, beams[n], strict=True):
            assert tokens_of(got) == tokens_of(want)
            assert got.score == pytest.approx(want.score, abs=1e-5)

    # The same with the coverage penalty, n-gram blocking and each sentence's own length limit (the default
    # 2 * source length + 10), on a source cut to its own length when alone.
    options = dict(beam_size=4, n_best=2, coverage_penalty=0.4, no_repeat_ngram_size=2)
    batch = translate(model, src, lengths, **options)
    assert any(tokens_of(a[0]) != tokens_of(b[0]) for a, b in zip(batch, beams, strict=True))  # options acted
    for n in (0, 5, 17):
        length = int(lengths[n])
        (alone,) = translate(model, src[n : n + 1, :length], lengths[n : n + 1], **options)
        for got, want in zip(alone, batch[n], strict=True):
            assert tokens_of(got) == tokens_of(want)
            assert not has_repeated_ngram(tokens_of(got), 2)
            assert got.score == pytest.approx(want.score, abs=1e-5)
