"""Tests for rnnkit.decoding on fixed probability tables whose expected results are derived by hand here.

Vocabulary convention: pad=0, unk=1, bos=2, eos=3, then ordinary tokens A=4, B=5, ...
Hypotheses are written as their emitted tokens, EOS included (e.g. "a a eos" = [A, A, EOS]).
"""

import itertools
import math
import zlib
from collections import namedtuple
from functools import lru_cache

import pytest
import torch

from rnnkit.decoding import (
    beam_search,
    filter_log_probs,
    greedy_decode,
    length_penalty,
    map_state,
    sample_decode,
    translate,
)

PAD, UNK, BOS, EOS, A, B = 0, 1, 2, 3, 4, 5
MAX_STEPS = 20  # capacity of the prefix buffer of the test models


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


def random_model(vocab=7, eos_bias=(0.0, 1.0, -1.0), allowed=None, dtype=torch.float32):
    """A PrefixModel whose every (table, prefix) has its own random distribution (seeded by a CRC of the key,
    so reproducible). The EOS logit is shifted by eos_bias[table % 3] so that tables end at different times.
    ``allowed``: the tokens of nonzero probability (default: all)."""

    def distribution(table_id, fed):
        seed = zlib.crc32(repr((table_id, fed)).encode())
        logits = torch.randn(vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5
        logits[EOS] += eos_bias[table_id % len(eos_bias)]
        if allowed is not None:
            blocked = torch.ones(vocab, dtype=torch.bool)
            blocked[list(allowed)] = False
            logits[blocked] = -math.inf
        return logits.log_softmax(0).to(dtype)

    return PrefixModel(distribution, vocab, dtype)


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


@pytest.mark.parametrize(("penalty", "alpha"), [("avg", 0.0), ("avg", 0.6), ("gnmt", 1.0)])
def test_sentence_result_independent_of_batch(penalty, alpha):
    model = random_model()
    options = dict(beam_size=3, n_best=3, max_len=9, length_penalty=penalty, alpha=alpha)
    alone = {t: beam_search(model, model.initial_state([t]), **options)[0] for t in range(7)}
    for tables in ([0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0], [3, 0], [2, 2, 5], [1, 4, 0, 6, 3]):
        batch = beam_search(model, model.initial_state(tables), **options)
        for table, hypotheses in zip(tables, batch, strict=True):
            assert_same_hypotheses(hypotheses, alone[table])
    lengths = {len(h) for hypotheses in alone.values() for h in hypotheses}
    assert len(lengths) > 2  # neighbours do finish at different steps


@pytest.mark.parametrize(
    ("penalty", "alpha", "min_len"),
    [("avg", 0.0, 0), ("avg", 0.6, 0), ("avg", 2.0, 0), ("gnmt", 1.0, 0), ("avg", 0.0, 2)],
)
def test_wide_beam_is_exhaustive_search(penalty, alpha, min_len):
    # Tokens eos, a, b only and max_len = 4: at most 8 live prefixes and 12 candidates a step, so K = 16
    # keeps everything and the n-best must be the brute-force ranking of all 1 + 2 + 4 + 8 = 15 outputs
    # (the "a b c" then eos forced at length 4 included). This also checks that the stopping rule never
    # stops a sentence that could still improve.
    model = random_model(vocab=6, allowed=(EOS, A, B), dtype=torch.float64)
    for table in range(3):
        outputs = []
        for length in range(max(min_len, 1), 5):
            for body in itertools.product((A, B), repeat=length - 1):
                tokens, fed, log_prob = body + (EOS,), (BOS,), 0.0
                for token in tokens:
                    log_prob += model.distribution(table, fed)[token].item()
                    fed = fed + (token,)
                outputs.append((log_prob / length_penalty(length, penalty, alpha), log_prob, tokens))
        outputs.sort(reverse=True)
        (hypotheses,) = beam_search(
            model, model.initial_state([table]), beam_size=16, n_best=len(outputs), max_len=4,
            min_len=min_len, length_penalty=penalty, alpha=alpha,
        )  # fmt: skip
        assert [tuple(tokens_of(h)) for h in hypotheses] == [tokens for _, _, tokens in outputs]
        assert [h.score for h in hypotheses] == pytest.approx([score for score, _, _ in outputs], rel=1e-12)
        assert [h.log_prob for h in hypotheses] == pytest.approx([lp for _, lp, _ in outputs], rel=1e-12)


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
    expected = beam_search(model, state, beam_size=3, n_best=2, alpha=0.6, max_len=2 * 3 + 10)
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
