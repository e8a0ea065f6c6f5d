"""Evaluation metrics for the rnnkit tasks.

One section per task, each metric a plain function of predictions and targets:

* language modelling: :func:`bits_per_char`, :func:`perplexity` (from a mean cross-entropy in nats);
* classification: :func:`accuracy`, :func:`macro_f1`;
* tagging: :func:`token_accuracy` (padding ignored), :func:`entity_scores` / :func:`entity_f1`
  (entity-level, BIO tags, via ``seqeval``);
* translation: :func:`bleu`, :func:`chrf` (corpus-level, via ``sacrebleu``), :func:`exact_match`;
* grapheme-to-phoneme: :func:`word_error_rate` (whole pronunciation wrong), :func:`phoneme_error_rate`
  (edit distance via ``rapidfuzz``);
* forecasting: :func:`mae`, :func:`rmse`, :func:`mase`, and the baselines :func:`naive_forecast`,
  :func:`seasonal_naive_forecast`.

Inputs may be Python sequences, numpy arrays or torch tensors; results are Python floats. Scores that
the reference libraries report in percent (BLEU, chrF) are returned in percent too; everything else is a
fraction in [0, 1] or in the units of the data.

Example::

    from rnnkit import metrics
    metrics.bits_per_char(1.386)                      # 2.0 bits per character
    metrics.macro_f1([0, 1, 1, 2], [0, 1, 2, 2])       # 0.777...
    metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"])  # 100.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "bits_per_char",
    "perplexity",
    "accuracy",
    "macro_f1",
    "token_accuracy",
    "entity_scores",
    "entity_f1",
    "bleu",
    "chrf",
    "exact_match",
    "word_error_rate",
    "phoneme_error_rate",
    "mae",
    "rmse",
    "mase",
    "naive_forecast",
    "seasonal_naive_forecast",
]


def _as_array(values) -> np.ndarray:
    """A numpy array from a list, array or tensor (detached, on the CPU)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_same_shape(predictions: np.ndarray, targets: np.ndarray) -> None:
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions and targets must have the same shape, got {predictions.shape} and {targets.shape}"
        )


def _check_not_empty(array: np.ndarray, name: str) -> None:
    if array.size == 0:
        raise ValueError(f"{name} is empty: a metric needs at least one value")


# -- language modelling -----------------------------------------------------------------------------------


def bits_per_char(loss: float) -> float:
    """Bits per character (or per token) from a mean cross-entropy in nats: ``loss / ln 2``."""
    return float(loss) / math.log(2.0)


def perplexity(loss: float) -> float:
    """Perplexity from a mean cross-entropy in nats: ``exp(loss)`` (inf if it overflows)."""
    try:
        return math.exp(float(loss))
    except OverflowError:
        return math.inf


# -- classification ---------------------------------------------------------------------------------------


def accuracy(predictions, targets) -> float:
    """Fraction of predictions equal to their targets (any shape; every element counts)."""
    predictions, targets = _as_array(predictions), _as_array(targets)
    _check_same_shape(predictions, targets)
    _check_not_empty(targets, "targets")
    return float((predictions == targets).mean())


def macro_f1(predictions, targets, labels: Sequence | None = None) -> float:
    """Unweighted mean over classes of the per-class F1 = 2 P R / (P + R).

    For class k: P = TP_k / (TP_k + FP_k) (precision), R = TP_k / (TP_k + FN_k) (recall); a class whose
    F1 is 0/0 (never predicted and never true) scores 0, as in scikit-learn. ``labels`` chooses the classes
    averaged over; by default every class that occurs in the targets or the predictions (scikit-learn's
    ``f1_score(targets, predictions, average="macro")``).
    """
    predictions = _as_array(predictions).reshape(-1)
    targets = _as_array(targets).reshape(-1)
    _check_same_shape(predictions, targets)
    _check_not_empty(targets, "targets")
    classes = np.unique(np.concatenate([targets, predictions])) if labels is None else np.asarray(labels)
    scores = []
    for label in classes:
        true_positives = np.sum((predictions == label) & (targets == label))
        predicted = np.sum(predictions == label)  # TP + FP
        actual = np.sum(targets == label)  # TP + FN
        # F1 = 2 TP / (2 TP + FP + FN), the same as 2 P R / (P + R) without the 0/0 of an empty P or R.
        denominator = predicted + actual
        scores.append(0.0 if denominator == 0 else 2.0 * true_positives / denominator)
    return float(np.mean(scores))


# -- tagging ----------------------------------------------------------------------------------------------


def token_accuracy(predictions, targets, valid=None, *, pad_id: int | None = 0) -> float:
    """Accuracy over real tokens of padded (B, T) tag batches.

    ``valid`` (B, T) bool is True at real positions; without it, positions whose target is ``pad_id`` are
    ignored (``pad_id=None``: every position counts).
    """
    predictions, targets = _as_array(predictions), _as_array(targets)
    _check_same_shape(predictions, targets)
    if valid is None:
        valid = np.ones(targets.shape, dtype=bool) if pad_id is None else targets != pad_id
    else:
        valid = _as_array(valid).astype(bool)
        if valid.shape != targets.shape:
            raise ValueError(f"valid must have the targets' shape {targets.shape}, got {valid.shape}")
    if not valid.any():
        raise ValueError("no valid (non-padding) position to score")
    return float((predictions == targets)[valid].mean())


def _check_tag_lists(true_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]) -> None:
    if len(true_tags) != len(predicted_tags):
        raise ValueError(
            "expected one predicted tag list per sentence: "
            f"{len(true_tags)} true, {len(predicted_tags)} predicted"
        )
    for index, (true, predicted) in enumerate(zip(true_tags, predicted_tags, strict=True)):
        if isinstance(true, str) or isinstance(predicted, str):
            raise ValueError("tags must be given as lists of tag lists (one list per sentence), got strings")
        if len(true) != len(predicted):
            raise ValueError(
                f"sentence {index}: {len(true)} true tags but {len(predicted)} predicted tags"
            )


def entity_scores(
    true_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]], *, strict: bool = False
) -> dict[str, float]:
    """Entity-level precision, recall and F1 of BIO-tagged sentences (``seqeval``, CoNLL-2000 style).

    An entity is a maximal span ``B-X I-X ...``; it counts as correct only if both its boundaries and its
    type match. With ``strict=False`` (conlleval's behaviour) an ``I-X`` that does not continue an ``X``
    starts a new entity; ``strict=True`` applies the IOB2 scheme strictly (such spans are not entities).

    Returns ``{"precision": P, "recall": R, "f1": F1}``, each in [0, 1].
    """
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    _check_tag_lists(true_tags, predicted_tags)
    true_tags = [list(tags) for tags in true_tags]
    predicted_tags = [list(tags) for tags in predicted_tags]
    options = {"mode": "strict", "scheme": IOB2} if strict else {}
    return {
        "precision": float(precision_score(true_tags, predicted_tags, zero_division=0, **options)),
        "recall": float(recall_score(true_tags, predicted_tags, zero_division=0, **options)),
        "f1": float(f1_score(true_tags, predicted_tags, zero_division=0, **options)),
    }


def entity_f1(
    true_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]], *, strict: bool = False
) -> float:
    """Entity-level F1 of BIO-tagged sentences; see :func:`entity_scores`."""
    return entity_scores(true_tags, predicted_tags, strict=strict)["f1"]


# -- translation ------------------------------------------------------------------------------------------


def _reference_streams(hypotheses: Sequence[str], references) -> list[list[str]]:
    """sacrebleu's layout (one list per reference *set*) from one reference, or a list, per hypothesis."""
    if isinstance(hypotheses, str):
        raise ValueError("hypotheses must be a list of sentences, got a single string")
    if len(references) != len(hypotheses):
        raise ValueError(
            f"expected one reference (or list of references) per hypothesis: {len(hypotheses)} hypotheses, "
            f"{len(references)} references"
        )
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    if all(isinstance(reference, str) for reference in references):
        return [list(references)]
    counts = {len(reference) for reference in references}
    if len(counts) != 1 or any(isinstance(reference, str) for reference in references):
        raise ValueError("every hypothesis needs the same number of references (a list of strings each)")
    return [list(stream) for stream in zip(*references, strict=True)]


def bleu(hypotheses: Sequence[str], references, *, tokenize: str = "13a", lowercase: bool = False) -> float:
    """Corpus-level BLEU (Papineni et al. 2002) in percent, as computed by ``sacrebleu``.

    BLEU = BP * exp(sum_{n=1..4} log(p_n) / 4), where p_n is the clipped n-gram precision summed over
    the corpus and BP = min(1, exp(1 - r / c)) the brevity penalty (c: hypothesis length, r: reference
    length, both in tokens over the corpus).

    Args:
        hypotheses: one detokenized sentence per segment.
        references: one reference sentence per hypothesis, or one list of references per hypothesis.
        tokenize: sacrebleu's tokenizer ("13a", "none", "char", "intl", ...).
    """
    import sacrebleu

    streams = _reference_streams(hypotheses, references)
    result = sacrebleu.corpus_bleu(list(hypotheses), streams, tokenize=tokenize, lowercase=lowercase)
    return float(result.score)


def chrf(hypotheses: Sequence[str], references, *, char_order: int = 6, beta: float = 2.0) -> float:
    """Corpus-level chrF (Popovic 2015) in percent, as computed by ``sacrebleu``.

    chrF_beta = (1 + beta^2) chrP chrR / (beta^2 chrP + chrR), with chrP and chrR the character n-gram
    precision and recall (n = 1..``char_order``, whitespace removed) averaged over n; beta = 2 weighs
    recall twice as much as precision. Same ``references`` layout as :func:`bleu`.
    """
    import sacrebleu

    streams = _reference_streams(hypotheses, references)
    metric = sacrebleu.metrics.CHRF(char_order=char_order, word_order=0, beta=beta)
    return float(metric.corpus_score(list(hypotheses), streams).score)


def exact_match(predictions: Sequence, references: Sequence) -> float:
    """Fraction of predictions identical to their reference (strings, or token sequences compared whole)."""
    if len(predictions) != len(references):
        raise ValueError(
            f"expected one reference per prediction, got {len(predictions)} and {len(references)}"
        )
    if len(predictions) == 0:
        raise ValueError("no predictions to score")

    def normal(item):
        if isinstance(item, torch.Tensor):
            return tuple(item.tolist())
        return item if isinstance(item, str) else tuple(item)

    matches = sum(normal(p) == normal(r) for p, r in zip(predictions, references, strict=True))
    return matches / len(predictions)


# -- grapheme-to-phoneme ----------------------------------------------------------------------------------


def _token_pairs(hypotheses: Sequence, references: Sequence) -> list[tuple[list, list]]:
    """(hypothesis tokens, reference tokens) per item: strings are split on whitespace, sequences kept."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ValueError("hypotheses and references must be lists (one item per word), got a single string")
    if len(hypotheses) != len(references):
        raise ValueError(f"expected one reference per hypothesis, got {len(hypotheses)} hypotheses and "
                         f"{len(references)} references")
    if len(references) == 0:
        raise ValueError("no hypotheses to score")

    return [(_tokens(h), _tokens(r)) for h, r in zip(hypotheses, references, strict=True)]


def _tokens(item) -> list:
    """A pronunciation as a list of symbols: a string split on whitespace, a tensor or sequence as a list."""
    if isinstance(item, torch.Tensor):
        return item.tolist()
    return item.split() if isinstance(item, str) else list(item)


def word_error_rate(hypotheses: Sequence, references: Sequence, *, alternatives: Sequence | None = None) -> float:
    """Word error rate in the grapheme-to-phoneme sense (Bisani & Ney 2008; Yao & Zweig 2015): the fraction of
    words whose predicted pronunciation differs from the reference anywhere, in [0, 1].

    Each hypothesis and reference is a pronunciation: a string of space-separated phonemes (``"K AE T"``) or
    a sequence of phoneme symbols. (Speech recognition's WER, an edit distance over words, is
    :func:`phoneme_error_rate` applied to word tokens.) ``alternatives``, one sequence per word (possibly
    empty), lists further pronunciations that count as right: a word is then wrong only if it matches none.
    """
    groups = _reference_groups(hypotheses, references, alternatives)
    return sum(all(h != r for r in options) for h, options in groups) / len(groups)


def phoneme_error_rate(hypotheses: Sequence, references: Sequence, *, alternatives: Sequence | None = None) -> float:
    """Phoneme error rate: the Levenshtein distance (substitutions + insertions + deletions, each cost 1) between
    predicted and reference phoneme sequences, summed over the corpus and divided by the total number of
    reference phonemes, as computed by ``rapidfuzz``.

    PER = sum_i d(hyp_i, ref_i) / sum_i |ref_i|. It can exceed 1 when hypotheses insert many phonemes. Same
    input layout as :func:`word_error_rate`; distances are over whole symbols (``AH0`` vs ``AH1`` is one
    substitution). With ``alternatives``, ref_i is whichever of the word's pronunciations is closest to hyp_i
    (the first listed of equally close ones).
    """
    from rapidfuzz.distance import Levenshtein

    distances, reference_length = 0, 0
    for hypothesis, options in _reference_groups(hypotheses, references, alternatives):
        distance, closest = min((Levenshtein.distance(hypothesis, r), i) for i, r in enumerate(options))
        distances += distance
        reference_length += len(options[closest])
    if reference_length == 0:
        raise ValueError("the references hold no phonemes: the phoneme error rate is undefined")
    return distances / reference_length


def _reference_groups(hypotheses: Sequence, references: Sequence,
                      alternatives: Sequence | None) -> list[tuple[list, list[list]]]:
    """Per word, its hypothesis tokens and the token lists of its reference followed by its alternatives."""
    pairs = _token_pairs(hypotheses, references)
    if alternatives is None:
        return [(h, [r]) for h, r in pairs]
    if isinstance(alternatives, str) or len(alternatives) != len(pairs):
        raise ValueError(f"alternatives must hold one sequence of pronunciations per word ({len(pairs)}), got "
                         f"{len(alternatives) if not isinstance(alternatives, str) else 'a string'}")
    groups = []
    for (h, r), further in zip(pairs, alternatives, strict=True):
        if isinstance(further, str):
            raise ValueError(f"each word's alternatives must be a sequence of pronunciations, got {further!r}")
        groups.append((h, [r] + [_tokens(a) for a in further]))
    return groups


# -- forecasting ------------------------------------------------------------------------------------------


def mae(predictions, targets) -> float:
    """Mean absolute error: mean |y_hat - y| over every element."""
    predictions, targets = _as_array(predictions), _as_array(targets)
    _check_same_shape(predictions, targets)
    _check_not_empty(targets, "targets")
    return float(np.mean(np.abs(predictions.astype(np.float64) - targets)))


def rmse(predictions, targets) -> float:
    """Root mean squared error: sqrt(mean (y_hat - y)^2) over every element."""
    predictions, targets = _as_array(predictions), _as_array(targets)
    _check_same_shape(predictions, targets)
    _check_not_empty(targets, "targets")
    return float(np.sqrt(np.mean((predictions.astype(np.float64) - targets) ** 2)))


def mase(predictions, targets, history, *, period: int = 1) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006).

    MASE = MAE(y_hat, y) / q, where q = mean_{t > m} |y_t - y_{t-m}| is the in-sample one-step MAE of the
    naive forecast (m = ``period`` = 1) or the seasonal-naive one (period m) on ``history``, the training
    part of the series. MASE < 1: better than that baseline's in-sample one-step error.
    """
    history = _as_array(history).astype(np.float64).reshape(-1)
    period = int(period)
    if period < 1:
        raise ValueError(f"period must be a positive number of steps, got {period}")
    if history.size <= period:
        raise ValueError(f"history needs more than period={period} values, got {history.size}")
    scale = float(np.mean(np.abs(history[period:] - history[:-period])))
    if scale == 0.0:
        raise ValueError("MASE is undefined: the history is constant at the given period (naive error 0)")
    return mae(predictions, targets) / scale


def naive_forecast(history, horizon: int) -> np.ndarray:
    """The naive forecast: the last observed value repeated, y_hat_{T+h} = y_T for h = 1..``horizon``.

    ``history`` (..., T): the last axis is time, so a batch of windows (B, T) gives forecasts (B, horizon).
    """
    return seasonal_naive_forecast(history, horizon, period=1)


def seasonal_naive_forecast(history, horizon: int, period: int) -> np.ndarray:
    """The seasonal-naive forecast: the value one season earlier, y_hat_{T+h} = y_{T+h-m*ceil(h/m)}.

    ``history`` (..., T) with time last, ``period`` m; returns (..., ``horizon``).
    """
    history = _as_array(history).astype(np.float64)
    horizon, period = int(horizon), int(period)
    if horizon < 1 or period < 1:
        raise ValueError(f"horizon and period must be positive, got horizon={horizon}, period={period}")
    if history.ndim == 0 or history.shape[-1] < period:
        raise ValueError(
            f"history needs at least period={period} values along its last axis, got shape {history.shape}"
        )
    last_season = history[..., history.shape[-1] - period:]  # (..., m)
    steps = np.arange(horizon) % period  # step h (0-based) repeats the season's value h mod m
    return last_season[..., steps]  # (..., horizon)
