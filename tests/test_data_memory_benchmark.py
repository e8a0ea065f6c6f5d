"""benchmarks/data_memory.py: the synthetic corpus it trains on, and the goal row it writes."""

from __future__ import annotations

from benchmarks import data_memory
from rnnkit.data import read_parallel


def test_synthetic_corpus_is_seeded_parallel_and_word_aligned(tmp_path):
    first, second, other = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "c.tsv"
    data_memory.write_corpus(first, 120, seed=0, vocabulary=50)
    data_memory.write_corpus(second, 120, seed=0, vocabulary=50)
    data_memory.write_corpus(other, 120, seed=1, vocabulary=50)
    assert first.read_bytes() == second.read_bytes() != other.read_bytes()
    pairs = read_parallel(first)
    assert len(pairs) == 120
    assert all(3 <= len(p.source.split()) == len(p.target.split()) <= 30 for p in pairs)
    # the target maps word by word, so one source word always becomes the same target word
    mapping: dict[str, set[str]] = {}
    for pair in pairs:
        words, translated = pair.source.split(), pair.target.split()
        for i, word in enumerate(words):
            j = i + 1 if i % 2 == 0 else i - 1  # neighbours swapped pairwise; a last odd word stays
            mapping.setdefault(word, set()).add(translated[j] if j < len(words) else translated[i])
    assert all(len(targets) == 1 for targets in mapping.values())


def _result(contender: str, pairs: int, peak: float) -> dict:
    return {"contender": contender, "pairs": pairs, "parameters": 12_400_000, "prepare_seconds": 1.0,
            "train_seconds": 1.0, "ready_mib": 300.0, "ready_peak_mib": 300.0, "peak_mib": peak,
            "target_tokens_mean": 20.0, "target_tokens_max": 60}


def test_goal_row_needs_a_million_pairs_and_under_2_gb():
    def goal_row(pairs, peak):
        results = [_result("mmap", pairs, peak), _result("lists", pairs, 2 * peak), _result("mmap", pairs // 50, 1000)]
        text = data_memory.report(results, pairs, 30, 187.0, "1, 1, 1", "1, 1, 1", "python -m benchmarks.data_memory")
        return next(line for line in text.splitlines() if line.startswith("| peak RSS under 2 GB"))

    met = goal_row(1_000_000, 1_595)
    assert met.endswith("| yes |") and "(2.0x less than Python lists)" in met and "+595 MiB against 20,000 pairs" in met
    assert goal_row(1_000_000, 2_100).endswith("| no |")
    assert goal_row(20_000, 500).endswith("| no |")  # a smaller corpus does not meet a goal set for a million
