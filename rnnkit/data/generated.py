"""Datasets generated on the spot, deterministic by seed, with fixed disjoint train / valid / test splits.

Translation:
  * :func:`generate_dates` - a date written out by CLDR (through Babel) in one of several locales and
    styles -> ISO 8601 ``YYYY-MM-DD``. The embedded default of ``rnnkit demo``.
  * :func:`generate_numbers` - a number in words in one language -> in another (num2words).
  * :func:`generate_reverse` - a sequence of symbols -> the same sequence reversed.

Memory (long-range dependencies):
  * :func:`adding_problem` - Hochreiter & Schmidhuber 1997, in the form of Arjovsky et al. 2016.
  * :func:`copy_memory` - Hochreiter & Schmidhuber 1997, in the form of Arjovsky et al. 2016.
  * :func:`sequential_digits` - scikit-learn's 8x8 digits read row by row or pixel by pixel.

How splits stay disjoint: for discrete data every candidate example has a key (the date, the number, the
symbol sequence, the copy payload) and a keyed hash of it decides its split once and for all
(:func:`split_of`): 90 % train, 5 % valid, 5 % test. A split draws only candidates that hash into it,
so the held-out dates (say) are never seen in training in any locale or style, and the sets do not
change when another split's size does. The real-valued adding problem draws each split from its own
random stream.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from rnnkit.checks import check_size
from rnnkit.data.readers import Records, SentencePair, SequenceArrays

SPLITS = ("train", "valid", "test")
HELD_OUT_FRACTION = 0.05  # of the key space, for each of valid and test


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_of(key: str, seed: int = 0) -> str:
    """The split of a key: its keyed BLAKE2b hash as u in [0, 1); u < 0.05 test, < 0.10 valid, else train."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, key=str(seed).encode("ascii")).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    if u < HELD_OUT_FRACTION:
        return "test"
    if u < 2 * HELD_OUT_FRACTION:
        return "valid"
    return "train"


def _split_rng(name: str, split: str, seed: int) -> random.Random:
    # A string seed is hashed by SHA-512 in random.Random (version 2): stable across Python versions.
    return random.Random(f"{name}/{split}/{seed}")


def _draw_unique(draw: Callable[[], str], split: str, n: int, seed: int, what: str) -> list[str]:
    """Draw ``n`` distinct keys that hash into ``split``; refuse if the key space is too small."""
    keys: list[str] = []
    seen: set[str] = set()
    budget = 200 * n + 10_000  # plenty for a space much larger than n; stops an endless loop otherwise
    for _ in range(budget):
        key = draw()
        if key not in seen and split_of(key, seed) == split:
            seen.add(key)
            keys.append(key)
            if len(keys) == n:
                return keys
    raise ValueError(f"could not draw {n} distinct {what} for the {split} split: the space of {what} is too "
                     f"small for that size; ask for fewer or widen the parameters")


# ----------------------------------------------------------------------------------------------------------
# Dates -> ISO 8601
# ----------------------------------------------------------------------------------------------------------

DATE_LOCALES = ("en", "fr", "de", "es", "it", "pt", "nl")
DATE_FORMATS = ("medium", "long", "full")  # CLDR styles; "short" (e.g. 05/03/24) is ambiguous and excluded
FIRST_DATE = datetime.date(1900, 1, 1)
LAST_DATE = datetime.date(2099, 12, 31)


class DatePair(NamedTuple):
    """A ``dates`` example with the locale and CLDR style its source was written in."""

    source: str
    target: str
    locale: str
    format: str


def generate_dates(
    split: str = "train",
    n: int = 20_000,
    seed: int = 0,
    locales: Sequence[str] = DATE_LOCALES,
    formats: Sequence[str] = DATE_FORMATS,
) -> list[DatePair]:
    """Dates written out in words -> ISO 8601, e.g. ``'mardi 5 mars 2024'`` -> ``'2024-03-05'``.

    Each example is a distinct day between 1900-01-01 and 2099-12-31 from the days that hash into ``split``
    (about 65,700 train days, 3,650 valid and 3,650 test). The (locale, style) combinations are assigned in
    turn, so each appears n / (len(locales) * len(formats)) times, give or take one.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        n: number of examples.
        seed: changes the sample (the split of days is fixed by ``seed`` too).
        locales: CLDR locale codes known to Babel.
        formats: CLDR date styles among ``"medium"``, ``"long"``, ``"full"``.
    """
    from babel import Locale, UnknownLocaleError
    from babel.dates import format_date

    check_split(split)
    bad_formats = [f for f in formats if f not in DATE_FORMATS]
    if bad_formats or not formats:
        hint = " ('short' is excluded: 05/03/24 reads differently by locale)" * ("short" in bad_formats)
        raise ValueError(f"formats must be a non-empty subset of {DATE_FORMATS}, got {list(formats)}{hint}")
    if not locales:
        raise ValueError("locales must not be empty")
    for code in locales:
        try:
            Locale.parse(code)
        except (UnknownLocaleError, ValueError):
            raise ValueError(f"unknown locale {code!r} (expected a CLDR code like 'en', 'pt_BR')") from None
    days = (LAST_DATE - FIRST_DATE).days + 1
    pool = [d for d in range(days) if split_of(f"date:{d}", seed) == split]
    if n > len(pool):
        raise ValueError(f"the {split} split has {len(pool)} distinct days; n must be <= that, got {n}")
    rng = _split_rng("dates", split, seed)
    chosen = rng.sample(pool, n)
    combos = [(loc, fmt) for loc in locales for fmt in formats]
    rng.shuffle(combos)
    examples = []
    for i, offset in enumerate(chosen):
        day = FIRST_DATE + datetime.timedelta(days=offset)
        locale, style = combos[i % len(combos)]
        examples.append(DatePair(format_date(day, style, locale=locale), day.isoformat(), locale, style))
    return examples


# ----------------------------------------------------------------------------------------------------------
# Numbers in words, between two languages
# ----------------------------------------------------------------------------------------------------------


def generate_numbers(
    split: str = "train",
    n: int = 20_000,
    seed: int = 0,
    source_lang: str = "en",
    target_lang: str = "fr",
    max_number: int = 1_000_000,
) -> Records[SentencePair]:
    """A number in words in ``source_lang`` -> the same number in words in ``target_lang`` (num2words).

    Numbers are drawn from [0, max_number) among those that hash into ``split``, without repeats, so a
    held-out number is never seen in training.
    """
    from num2words import CONVERTER_CLASSES, num2words

    check_split(split)
    for lang in (source_lang, target_lang):
        if lang not in CONVERTER_CLASSES:
            known = ", ".join(sorted(CONVERTER_CLASSES))
            raise ValueError(f"num2words has no language {lang!r}; known: {known}")
    if source_lang == target_lang:
        raise ValueError(f"source and target language must differ, got {source_lang!r} twice")
    check_size("max_number", max_number)
    rng = _split_rng("numbers", split, seed)
    keys = _draw_unique(lambda: str(rng.randrange(max_number)), split, n, seed, "numbers")
    return Records([SentencePair(num2words(int(k), lang=source_lang), num2words(int(k), lang=target_lang))
                    for k in keys])


# ----------------------------------------------------------------------------------------------------------
# Sequence reversal
# ----------------------------------------------------------------------------------------------------------


def generate_reverse(
    split: str = "train",
    n: int = 10_000,
    seed: int = 0,
    min_len: int = 5,
    max_len: int = 15,
    symbols: int = 10,
) -> Records[SentencePair]:
    """``'c a f b'`` -> ``'b f a c'``: space-separated symbols (the first ``symbols`` letters a, b, c, ...).

    Lengths are uniform in [min_len, max_len]; sequences are distinct across all splits. Reversal puts the
    first source token last, so without attention the whole sequence must pass through the encoder state
    (Sutskever et al. 2014 reversed their source sentences for the same reason).
    """
    check_split(split)
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if not 2 <= symbols <= 26:
        raise ValueError(f"symbols must be in [2, 26], got {symbols}")
    alphabet = [chr(ord("a") + i) for i in range(symbols)]
    rng = _split_rng("reverse", split, seed)

    def draw() -> str:
        return " ".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))

    keys = _draw_unique(draw, split, n, seed, "symbol sequences")
    return Records([SentencePair(k, " ".join(reversed(k.split()))) for k in keys])


# ----------------------------------------------------------------------------------------------------------
# Adding problem and copy memory (Arjovsky, Shah & Bengio 2016, "Unitary evolution RNNs", section 4)
# ----------------------------------------------------------------------------------------------------------

_SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}


def adding_problem(split: str = "train", n: int = 10_000, T: int = 100, seed: int = 0) -> SequenceArrays:
    """The adding problem: sum the two values marked in a long sequence.

    Input x_t = (u_t, m_t) for t = 1..T: u_t ~ U(0, 1), and m_t = 1 at exactly two positions, one drawn
    uniformly from the first half [0, T/2) and one from the second half [T/2, T), else 0. The target is
    y = sum_t m_t u_t. Predicting the constant E[y] = 1 gives MSE Var[y] = 2/12 = 1/6 ~ 0.167, the
    baseline a model must beat.

    Returns:
        inputs (N, T, 2) float32 (channel 0 the values, channel 1 the markers), targets (N,) float32.
    """
    check_split(split)
    if T < 2:
        raise ValueError(f"T must be >= 2 (one marker in each half), got {T}")
    rng = np.random.default_rng([seed, _SPLIT_INDEX[split], 1])  # an independent stream per split
    values = rng.random((n, T))  # (N, T) U(0, 1)
    first = rng.integers(0, T // 2, size=n)  # (N,) a marker in the first half
    second = rng.integers(T // 2, T, size=n)  # (N,) a marker in the second half
    markers = np.zeros((n, T))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    inputs = np.stack([values, markers], axis=-1).astype(np.float32)  # (N, T, 2)
    targets = (values[rows, first] + values[rows, second]).astype(np.float32)  # (N,)
    return SequenceArrays(inputs=inputs, targets=targets)


COPY_BLANK, COPY_DELIMITER = 0, 9
COPY_SYMBOLS = 8  # symbols 1..8
COPY_LENGTH = 10


def copy_memory(split: str = "train", n: int = 10_000, T: int = 100, seed: int = 0) -> SequenceArrays:
    """The copy-memory task: remember 10 symbols across T blank steps, then write them out.

    Alphabet {0: blank, 1..8: symbols, 9: delimiter}. Input (length T + 20): 10 symbols drawn uniformly
    from 1..8, T - 1 blanks, the delimiter, 10 blanks. Target: T + 10 blanks, then the 10 symbols.
    A memoryless model that outputs blanks and then guesses uniformly scores the cross-entropy
    10 ln 8 / (T + 20) nats per step, the baseline a model must beat. Payloads are distinct across splits.

    Returns:
        inputs (N, T + 20) int64, targets (N, T + 20) int64.
    """
    check_split(split)
    check_size("T", T)
    rng = _split_rng("copy-memory", split, seed)
    symbols = "".join(str(s) for s in range(1, COPY_SYMBOLS + 1))

    def draw() -> str:
        return "".join(rng.choice(symbols) for _ in range(COPY_LENGTH))

    payloads = _draw_unique(draw, split, n, seed, "payloads")
    payload = np.array([[int(c) for c in p] for p in payloads], dtype=np.int64)
    payload = payload.reshape(n, COPY_LENGTH)  # (N, 10)
    length = T + 2 * COPY_LENGTH
    inputs = np.full((n, length), COPY_BLANK, dtype=np.int64)  # (N, T + 20)
    inputs[:, :COPY_LENGTH] = payload
    inputs[:, COPY_LENGTH + T - 1] = COPY_DELIMITER
    targets = np.full((n, length), COPY_BLANK, dtype=np.int64)  # (N, T + 20)
    targets[:, -COPY_LENGTH:] = payload
    return SequenceArrays(inputs=inputs, targets=targets)


def copy_memory_baseline(T: int) -> float:
    """Cross-entropy (nats per step) of the memoryless strategy on :func:`copy_memory`: 10 ln 8 / (T + 20)."""
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (T + 2 * COPY_LENGTH)


# ----------------------------------------------------------------------------------------------------------
# Sequential 8x8 digits (scikit-learn)
# ----------------------------------------------------------------------------------------------------------

DIGITS_SPLIT_SIZES = {"train": 1437, "valid": 180, "test": 180}


def sequential_digits(split: str = "train", steps: int = 8, seed: int = 0) -> SequenceArrays:
    """scikit-learn's 1,797 8x8 handwritten digits as sequences: 8 steps of a row (8 values) or 64 of a pixel.

    Pixel values 0..16 are scaled to [0, 1]. The images are split 1437 / 180 / 180 by a seeded permutation.

    Returns:
        inputs (N, 8, 8) or (N, 64, 1) float32, targets (N,) int64 digit classes.
    """
    from sklearn.datasets import load_digits

    check_split(split)
    if steps not in (8, 64):
        raise ValueError(f"steps must be 8 (rows) or 64 (pixels), got {steps}")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8)
    order = list(range(len(images)))
    random.Random(f"digits/{seed}").shuffle(order)
    n_test, n_valid = DIGITS_SPLIT_SIZES["test"], DIGITS_SPLIT_SIZES["valid"]
    chosen = {"test": order[:n_test], "valid": order[n_test: n_test + n_valid],
              "train": order[n_test + n_valid:]}[split]
    inputs = images[chosen].reshape(len(chosen), steps, 64 // steps)  # (N, steps, 64 / steps)
    return SequenceArrays(inputs=inputs, targets=digits.target[chosen].astype(np.int64))
