"""Generated datasets: determinism by seed, disjoint splits, and the properties each task promises."""

from __future__ import annotations

import datetime
import math
import time

import numpy as np
import pytest
from babel.dates import format_date
from num2words import num2words
from sklearn.datasets import load_digits

from rnnkit.data import (
    adding_problem,
    copy_memory,
    copy_memory_baseline,
    generate_dates,
    generate_numbers,
    generate_reverse,
    load,
    sequential_digits,
)
from rnnkit.data.generated import DATE_FORMATS, DATE_LOCALES, split_of

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def dates() -> dict[str, list]:
    return {split: generate_dates(split, n=3000 if split == "train" else 400) for split in SPLITS}


def test_dates_same_seed_same_data_other_seed_other_data(dates):
    assert generate_dates("valid", n=400) == dates["valid"]
    assert generate_dates("valid", n=400, seed=1) != dates["valid"]


def test_dates_split_by_date_value(dates):
    days = {split: {p.target for p in pairs} for split, pairs in dates.items()}
    assert not days["train"] & days["valid"]
    assert not days["train"] & days["test"]
    assert not days["valid"] & days["test"]
    # every day of a split hashes into it, so held-out days stay held out at any size
    assert all(split_of(f"date:{(datetime.date.fromisoformat(d) - datetime.date(1900, 1, 1)).days}") == "test"
               for d in days["test"])
    bigger = {p.target for p in generate_dates("train", n=20_000)}
    assert not bigger & (days["valid"] | days["test"])


def test_dates_cover_every_locale_and_format(dates):
    expected = {(loc, fmt) for loc in DATE_LOCALES for fmt in DATE_FORMATS}
    assert len(DATE_LOCALES) >= 6 and "short" not in DATE_FORMATS
    for split in SPLITS:
        assert {(p.locale, p.format) for p in dates[split]} == expected


def test_dates_round_trip_through_babel(dates):
    for pair in dates["test"][:200]:
        day = datetime.date.fromisoformat(pair.target)
        assert pair.target == f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
        assert format_date(day, pair.format, locale=pair.locale) == pair.source
    # the plain pairs the catalog hands out are the same sources and targets
    plain = load("dates", split="test", n_test=50)
    expected = [(p.source, p.target) for p in generate_dates("test", n=50)]
    assert [(p.source, p.target) for p in plain] == expected


def test_dates_default_train_set_is_fast():
    start = time.perf_counter()
    pairs = load("dates", split="train")
    elapsed = time.perf_counter() - start
    assert len(pairs) == 20_000 and len({p.source for p in pairs}) == 20_000
    assert elapsed < 5.0, f"20k date pairs took {elapsed:.1f} s"


def test_dates_reject_short_format_and_unknown_locale():
    with pytest.raises(ValueError, match="short"):
        generate_dates("train", n=10, formats=("short",))
    with pytest.raises(ValueError, match="unknown locale 'xx_YY'"):
        generate_dates("train", n=10, locales=("xx_YY",))
    with pytest.raises(ValueError, match="split must be one of"):
        generate_dates("dev", n=10)


def test_numbers_are_translations_and_splits_disjoint():
    pairs = {split: generate_numbers(split, n=300, source_lang="en", target_lang="de") for split in SPLITS}
    assert pairs["train"] == generate_numbers("train", n=300, source_lang="en", target_lang="de")
    sources = {split: {p.source for p in ps} for split, ps in pairs.items()}
    assert not sources["train"] & sources["valid"] and not sources["train"] & sources["test"]
    assert not sources["valid"] & sources["test"]
    with pytest.raises(ValueError, match="no language 'xx'"):
        generate_numbers("train", n=5, target_lang="xx")
    assert load("numbers:en-de", split="valid", n_valid=300) == pairs["valid"]


def test_numbers_target_matches_num2words_for_every_pair():
    pairs = generate_numbers("test", n=50, max_number=2000, source_lang="fr", target_lang="en")
    by_french = {num2words(n, lang="fr"): num2words(n, lang="en") for n in range(2000)}
    assert all(by_french[p.source] == p.target for p in pairs)
    assert len({p.source for p in pairs}) == 50


def test_reverse():
    pairs = {split: generate_reverse(split, n=500, min_len=3, max_len=8, symbols=5) for split in SPLITS}
    for pair in pairs["train"]:
        assert pair.target.split() == pair.source.split()[::-1]
        assert 3 <= len(pair.source.split()) <= 8
        assert set(pair.source.split()) <= set("abcde")
    keys = {split: {p.source for p in ps} for split, ps in pairs.items()}
    assert not keys["train"] & keys["valid"] and not keys["train"] & keys["test"]
    assert not keys["valid"] & keys["test"]
    assert generate_reverse("test", n=500, min_len=3, max_len=8, symbols=5) == pairs["test"]
    with pytest.raises(ValueError, match="too small"):
        generate_reverse("train", n=100, min_len=1, max_len=1, symbols=2)


def test_adding_problem_structure_and_baseline():
    data = adding_problem("train", n=4000, T=50, seed=7)
    assert data.inputs.shape == (4000, 50, 2) and data.targets.shape == (4000,)
    markers = data.inputs[:, :, 1]
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, :25].sum(axis=1) == 1) and np.all(markers[:, 25:].sum(axis=1) == 1)
    np.testing.assert_allclose((data.inputs[:, :, 0] * markers).sum(axis=1), data.targets, rtol=1e-6)
    # predicting the constant 1 gives MSE Var(U1 + U2) = 1/6 (Arjovsky et al. 2016)
    assert np.mean((data.targets - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.01)
    same = adding_problem("train", n=4000, T=50, seed=7)
    np.testing.assert_array_equal(same.inputs, data.inputs)
    other = adding_problem("test", n=100, T=50, seed=7)
    train_rows = {row.tobytes() for row in data.inputs}
    assert not any(row.tobytes() in train_rows for row in other.inputs)


def test_copy_memory_structure_and_disjoint_payloads():
    T = 30
    data = copy_memory("train", n=500, T=T)
    assert data.inputs.shape == (500, T + 20) and data.targets.shape == (500, T + 20)
    payload = data.inputs[:, :10]
    assert payload.min() >= 1 and payload.max() <= 8
    assert np.all(data.inputs[:, 10: 10 + T - 1] == 0)
    assert np.all(data.inputs[:, 10 + T - 1] == 9) and np.all(data.inputs[:, 10 + T:] == 0)
    assert np.all(data.targets[:, : T + 10] == 0)
    np.testing.assert_array_equal(data.targets[:, -10:], payload)
    test = copy_memory("test", n=200, T=T)
    train_payloads = {row.tobytes() for row in payload}
    assert not any(row.tobytes() in train_payloads for row in test.inputs[:, :10])
    np.testing.assert_array_equal(copy_memory("test", n=200, T=T).inputs, test.inputs)
    assert copy_memory_baseline(100) == pytest.approx(10 * math.log(8) / 120)


def test_copy_memory_baseline_is_the_memoryless_cross_entropy():
    # blanks predicted with certainty for T + 10 steps, then uniform over 8 symbols for 10 steps
    T = 30
    data = copy_memory("valid", n=50, T=T)
    probs = np.zeros((T + 20, 10))
    probs[: T + 10, 0] = 1.0
    probs[T + 10:, 1:9] = 1 / 8
    picked = probs[np.arange(T + 20), data.targets]  # (N, T + 20)
    assert -np.log(picked).mean() == pytest.approx(copy_memory_baseline(T))


def test_sequential_digits():
    digits = load_digits()
    parts = {split: sequential_digits(split, steps=8) for split in SPLITS}
    assert [len(parts[s]) for s in SPLITS] == [1437, 180, 180]
    rows = {split: {x.tobytes() for x in p.inputs} for split, p in parts.items()}
    assert not rows["train"] & rows["test"] and not rows["valid"] & rows["test"]
    first = parts["test"].inputs[0]
    assert first.shape == (8, 8) and 0.0 <= first.min() and first.max() <= 1.0
    match = [i for i in range(len(digits.images)) if np.array_equal(digits.images[i] / 16.0, first)]
    assert match and digits.target[match[0]] == parts["test"].targets[0]
    pixels = sequential_digits("test", steps=64)
    assert pixels.inputs.shape == (180, 64, 1)
    np.testing.assert_array_equal(pixels.inputs.reshape(180, 8, 8), parts["test"].inputs)
