"""Tests for rnnkit.metrics against scikit-learn, seqeval, sacrebleu and values worked out by hand."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import sacrebleu
import torch
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import accuracy_score, f1_score

from rnnkit import metrics


def test_bits_per_char_and_perplexity():
    assert metrics.bits_per_char(1.5 * math.log(2)) == pytest.approx(1.5)
    assert metrics.perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert metrics.perplexity(1e6) == math.inf
    # The two agree: perplexity = 2 ** bits.
    assert 2 ** metrics.bits_per_char(2.3) == pytest.approx(metrics.perplexity(2.3))


def test_accuracy_against_sklearn_and_by_hand():
    assert metrics.accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 0.5
    rng = np.random.default_rng(0)
    targets, predictions = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    expected = accuracy_score(targets, predictions)
    assert metrics.accuracy(torch.tensor(predictions), targets) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same shape"):
        metrics.accuracy([1, 2], [1, 2, 3])


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 5, 40)
    predictions = np.where(rng.random(40) < 0.5, targets, rng.integers(0, 6, 40))  # class 5 only predicted
    expected = f1_score(targets, predictions, average="macro", zero_division=0)
    assert metrics.macro_f1(predictions, targets) == pytest.approx(expected)
    labels = [0, 1, 2, 7]  # a label that never occurs scores 0
    expected = f1_score(targets, predictions, average="macro", labels=labels, zero_division=0)
    assert metrics.macro_f1(predictions, targets, labels=labels) == pytest.approx(expected)


def test_macro_f1_by_hand():
    # class 0: TP 1, FP 0, FN 0 -> 1; class 1: TP 1, FP 0, FN 1 -> 2/3; class 2: TP 1, FP 1, FN 0 -> 2/3.
    assert metrics.macro_f1([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_token_accuracy_ignores_padding():
    targets = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    predictions = torch.tensor([[3, 1, 5, 9], [6, 6, 9, 9]])
    assert metrics.token_accuracy(predictions, targets) == pytest.approx(3 / 5)
    valid = torch.tensor([[True, True, False, False], [True, False, False, False]])
    assert metrics.token_accuracy(predictions, targets, valid) == pytest.approx(2 / 3)
    assert metrics.token_accuracy(predictions, targets, pad_id=None) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="no valid"):
        metrics.token_accuracy([[1]], [[0]])


def test_entity_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-LOC", "I-LOC"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "O", "B-LOC", "O"]]
    # True entities: PER(0-1), LOC(3), ORG(0), LOC(2-3) = 4; predicted: PER(0-1), ORG(3), LOC(2) = 3;
    # only PER(0-1) matches in type and both boundaries.
    scores = metrics.entity_scores(true, predicted)
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 4)
    assert scores["f1"] == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    assert metrics.entity_f1(true, predicted) == pytest.approx(seqeval_f1(true, predicted))
    assert metrics.entity_f1(true, true) == 1.0


def test_entity_scores_strict_iob2():
    true, predicted = [["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]
    # conlleval (default): a leading I-PER starts a PER entity, which matches the prediction.
    assert metrics.entity_f1(true, predicted) == 1.0
    # strict IOB2: I-PER cannot start an entity, so the true sentence has none and the prediction is wrong.
    assert metrics.entity_scores(true, predicted, strict=True)["precision"] == 0.0


def test_entity_scores_reject_mismatched_input():
    with pytest.raises(ValueError, match="sentence 0"):
        metrics.entity_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="lists of tag lists"):
        metrics.entity_f1(["O"], ["O"])


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu_by_hand(hypotheses: list[str], references: list[str]) -> float:
    """Papineni et al. 2002 with whitespace tokens (sacrebleu's 13a tokenizer splits these sentences so)."""
    matches, totals, hyp_length, ref_length = [0] * 4, [0] * 4, 0, 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = hypothesis.split(), reference.split()
        hyp_length += len(hyp)
        ref_length += len(ref)
        for n in range(1, 5):
            hyp_counts, ref_counts = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(count, ref_counts[gram]) for gram, count in hyp_counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / 4
    brevity = 1.0 if hyp_length > ref_length else math.exp(1 - ref_length / hyp_length)
    return 100 * brevity * math.exp(log_precision)


def test_bleu_by_hand_and_identity():
    hypotheses = ["the cat sat on the mat today", "a dog ran in the big park"]
    references = ["the cat sat on a mat today", "the dog ran in the big green park"]
    expected = _bleu_by_hand(hypotheses, references)
    assert metrics.bleu(hypotheses, references) == pytest.approx(expected, rel=1e-9)
    assert metrics.bleu(references, references) == pytest.approx(100.0)
    # Several references per hypothesis, in the per-hypothesis layout.
    multi = [[r, h] for h, r in zip(hypotheses, references, strict=True)]
    assert metrics.bleu(hypotheses, multi) == pytest.approx(100.0)
    expected = sacrebleu.corpus_bleu(hypotheses, [references, ["x y z"] * 2]).score
    assert metrics.bleu(hypotheses, [[r, "x y z"] for r in references]) == pytest.approx(expected)


def _chrf_by_hand(hypotheses: list[str], references: list[str], order: int = 6, beta: float = 2.0) -> float:
    """Popovic 2015 as sacrebleu 2 computes it at corpus level: character n-gram counts (whitespace removed)
    summed over the corpus, precision and recall averaged over n, then the F-beta of the averages."""
    stats = [[0, 0, 0] for _ in range(order)]  # hypothesis n-grams, reference n-grams, matches
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = list(hypothesis.replace(" ", "")), list(reference.replace(" ", ""))
        for n in range(1, order + 1):
            hyp_counts, ref_counts = _ngrams(hyp, n), _ngrams(ref, n)
            stats[n - 1][0] += sum(hyp_counts.values())
            stats[n - 1][1] += sum(ref_counts.values())
            stats[n - 1][2] += sum((hyp_counts & ref_counts).values())
    precisions = [m / h for h, r, m in stats if h and r]
    recalls = [m / r for h, r, m in stats if h and r]
    precision, recall = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 100 * (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def test_chrf_by_hand_and_identity():
    hypotheses = ["the cat sat on the mat", "le chien court"]
    references = ["the cat is on the mat", "les chiens courent"]
    expected = _chrf_by_hand(hypotheses, references)
    assert metrics.chrf(hypotheses, references) == pytest.approx(expected, rel=1e-9)
    assert metrics.chrf(references, references) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="one reference"):
        metrics.chrf(hypotheses, references[:1])


def test_exact_match():
    assert metrics.exact_match(["2024-01-02", "1999-12-31"], ["2024-01-02", "1999-12-30"]) == 0.5
    assert metrics.exact_match([[1, 2, 3], torch.tensor([4, 5])], [(1, 2, 3), [4, 5, 6]]) == 0.5


def test_word_error_rate_counts_words_with_any_phoneme_wrong():
    references = ["K AE T", "D AO G", "B ER D", "F IH SH"]
    hypotheses = ["K AE T", "D AA G", "B ER D", "F IH SH S"]  # "dog" substituted, "fish" inserted
    assert metrics.word_error_rate(hypotheses, references) == 0.5
    assert metrics.word_error_rate(references, references) == 0.0
    # whitespace is not a phoneme; token sequences are accepted as well as strings
    assert metrics.word_error_rate(["K  AE T "], [["K", "AE", "T"]]) == 0.0
    assert metrics.word_error_rate(["AH0 B"], ["AH1 B"]) == 1.0  # a stress error is an error


def test_phoneme_error_rate_by_hand():
    # "cat": K AE T -> K AH T S is one substitution and one insertion: 2 edits / 3 phonemes
    assert metrics.phoneme_error_rate(["K AH T S"], ["K AE T"]) == pytest.approx(2 / 3)
    # deletions: an empty hypothesis costs the whole reference
    assert metrics.phoneme_error_rate([""], ["AH B"]) == 1.0
    # symbols, not characters: AA vs AE is one edit, AH0 vs AH1 one edit
    assert metrics.phoneme_error_rate(["AA B", "AH0"], ["AE B", "AH1"]) == pytest.approx(2 / 3)
    # corpus level: total edits / total reference length = (2 + 0) / (3 + 4), not the mean of 2/3 and 0
    assert metrics.phoneme_error_rate(["K AH T S", "S T AA P"], ["K AE T", "S T AA P"]) == pytest.approx(2 / 7)
    # the textbook case kitten -> sitting has distance 3, over 7 reference symbols
    assert metrics.phoneme_error_rate([list("kitten")], [list("sitting")]) == pytest.approx(3 / 7)
    # a transposition is two edits in Levenshtein distance (no Damerau swaps)
    assert metrics.phoneme_error_rate(["T S"], ["S T"]) == 1.0
    assert metrics.phoneme_error_rate([torch.tensor([5, 6, 7])], [torch.tensor([5, 7])]) == 0.5


def test_g2p_error_rates_with_alternative_pronunciations():
    # "read" has R EH D and R IY D; "either" IY DH ER and AY DH ER; "cat" one pronunciation
    references = ["R EH D", "IY DH ER", "K AE T"]
    alternatives = [["R IY D"], ("AY DH ER",), []]
    hypotheses = ["R IY D", "AY DH AH", "K AE T"]
    assert metrics.word_error_rate(hypotheses, references) == pytest.approx(2 / 3)
    assert metrics.word_error_rate(hypotheses, references, alternatives=alternatives) == pytest.approx(1 / 3)
    # PER against the closest pronunciation: 0 edits (R IY D) + 1 (AY DH ER) + 0, over 3 + 3 + 3 phonemes
    assert metrics.phoneme_error_rate(hypotheses, references) == pytest.approx((1 + 2 + 0) / 9)
    assert metrics.phoneme_error_rate(hypotheses, references, alternatives=alternatives) == pytest.approx(1 / 9)
    # the closest pronunciation's length is the denominator: "K AE T S" is 1 edit from the longer variant
    assert metrics.phoneme_error_rate(["K AE T S"], ["K AE"], alternatives=[["K AE T S Z"]]) == pytest.approx(1 / 5)
    # with no alternatives listed, the figures are the single-reference ones
    empty = [[] for _ in references]
    assert metrics.word_error_rate(hypotheses, references, alternatives=empty) == pytest.approx(2 / 3)
    assert metrics.phoneme_error_rate(hypotheses, references, alternatives=empty) == pytest.approx(3 / 9)
    for metric in (metrics.word_error_rate, metrics.phoneme_error_rate):
        with pytest.raises(ValueError, match="one sequence of pronunciations per word"):
            metric(hypotheses, references, alternatives=[[]])
        with pytest.raises(ValueError, match="must be a sequence of pronunciations"):
            metric(hypotheses, references, alternatives=["R IY D", [], []])


def test_g2p_error_rates_reject_bad_input():
    for metric in (metrics.word_error_rate, metrics.phoneme_error_rate):
        with pytest.raises(ValueError, match="one reference per hypothesis"):
            metric(["A"], ["A", "B"])
        with pytest.raises(ValueError, match="no hypotheses"):
            metric([], [])
        with pytest.raises(ValueError, match="single string"):
            metric("K AE T", "K AE T")
    with pytest.raises(ValueError, match="no phonemes"):
        metrics.phoneme_error_rate(["A"], [""])


def test_mae_rmse_by_hand():
    predictions, targets = [1.0, 2.0, 4.0], [2.0, 2.0, 1.0]
    assert metrics.mae(predictions, targets) == pytest.approx(4 / 3)
    assert metrics.rmse(predictions, targets) == pytest.approx(math.sqrt(10 / 3))
    assert metrics.rmse(torch.tensor([[1.0], [3.0]]), np.array([[1.0], [1.0]])) == pytest.approx(math.sqrt(2))


def test_mase_by_hand():
    history = [1.0, 3.0, 2.0, 5.0]
    predictions, targets = [6.0, 4.0], [5.0, 6.0]  # MAE 1.5
    # naive in-sample one-step errors |3-1|, |2-3|, |5-2| -> 2; seasonal m=2: |2-1|, |5-3| -> 1.5.
    assert metrics.mase(predictions, targets, history) == pytest.approx(1.5 / 2)
    assert metrics.mase(predictions, targets, history, period=2) == pytest.approx(1.5 / 1.5)
    with pytest.raises(ValueError, match="constant"):
        metrics.mase(predictions, targets, [2.0, 2.0, 2.0])


def test_naive_and_seasonal_naive_forecasts_by_hand():
    history = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert metrics.naive_forecast(history, 3).tolist() == [5.0, 5.0, 5.0]
    # m = 2: the last season is (4, 5), repeated.
    assert metrics.seasonal_naive_forecast(history, 5, period=2).tolist() == [4.0, 5.0, 4.0, 5.0, 4.0]
    batch = torch.tensor([[1.0, 2.0, 3.0], [7.0, 8.0, 9.0]])
    assert metrics.seasonal_naive_forecast(batch, 4, period=3).tolist() == [[1, 2, 3, 1], [7, 8, 9, 7]]
    with pytest.raises(ValueError, match="period=6"):
        metrics.seasonal_naive_forecast(history, 2, period=6)
