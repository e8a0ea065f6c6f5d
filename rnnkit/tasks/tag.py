"""Sequence tagging (part of speech, BIO named entities): a bidirectional :class:`rnnkit.models.SequenceTagger`.

One tag per token: embeddings -> bidirectional recurrent layer -> emission scores, trained with per-token
cross-entropy, or with a linear-chain CRF (``--crf``, Lample et al. 2016) decoded by Viterbi.

Metrics: ``token_accuracy`` over every real token; when the tags are BIO (``B-X``, ``I-X``, ``O``), entity
precision / recall / F1 through ``seqeval`` (an entity counts only with the right span and type). Next to
them, ``baseline_token_accuracy``: each word's most frequent training tag (unknown words: the most frequent
tag overall), the figure a tagger must beat.

Example::

    rnnkit train tag --data turkish-pos --out runs/pos
    echo "Bu bir deneme ." | rnnkit predict runs/pos
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit.checkpoint import atomic_write_json
from rnnkit.checks import check_size
from rnnkit.data import LabelSet, Vocab, bucketed_batches, load_source, pad_sequences
from rnnkit.metrics import entity_scores
from rnnkit.models import SequenceTagger, SequenceTaggerConfig
from rnnkit.tasks import TaskRunner, common_defaults, jsonable_settings, run_file, run_sources

DEFAULTS: dict[str, Any] = common_defaults(
    data="turkish-pos",
    lowercase=False,
    min_freq=2,  # training singletons become <unk>, so the model learns to tag unknown words from context
    max_vocab=0,
    cell="lstm",
    embedding_size=100,
    hidden_size=128,
    num_layers=1,
    bidirectional=True,
    crf=False,
    dropout=0.3,
    batch_size=16,
    lr=2e-3,
    patience=4,
)

HELP: dict[str, str] = {
    "lowercase": "lowercase tokens before looking them up",
    "min_freq": "keep tokens seen at least this often in training (others become <unk>)",
    "max_vocab": "at most this many vocabulary entries, specials included (0 = no limit)",
    "cell": "recurrent cell: lstm | gru | rnn",
    "embedding_size": "size of the token embeddings",
    "hidden_size": "state size H of each direction",
    "num_layers": "stacked recurrent layers",
    "bidirectional": "read each sentence in both directions",
    "crf": "score whole tag sequences with a linear-chain CRF and decode by Viterbi",
    "dropout": "dropout on embeddings, between layers and before the emission layer",
    "batch_size": "sentences per batch (length-bucketed)",
}


def is_bio(tags: Sequence[str]) -> bool:
    """True when every tag is ``O`` or ``B-X`` / ``I-X``, and some tag is not ``O``: entity F1 applies."""
    return any(t != "O" for t in tags) and all(t == "O" or (t[:2] in ("B-", "I-") and len(t) > 2) for t in tags)


class MostFrequentTag:
    """The baseline: each word's most frequent tag in training; unseen words get the most frequent tag."""

    def __init__(self, sentences: Sequence[tuple[Sequence[str], Sequence[str]]], lowercase: bool) -> None:
        self.lowercase = lowercase
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        overall: Counter[str] = Counter()
        for tokens, tags in sentences:
            for token, tag in zip(tokens, tags, strict=True):
                counts[self._key(token)][tag] += 1
                overall[tag] += 1
        # Ties broken by the tag itself, so the baseline does not depend on the order of the data.
        self.default = min(overall, key=lambda t: (-overall[t], t)) if overall else "O"
        self.table = {w: min(c, key=lambda t, c=c: (-c[t], t)) for w, c in counts.items()}

    @classmethod
    def from_table(cls, table: dict[str, str], default: str, lowercase: bool) -> MostFrequentTag:
        """The baseline from its saved word -> tag table."""
        baseline = cls([], lowercase)
        baseline.table, baseline.default = {str(w): str(t) for w, t in table.items()}, default
        return baseline

    def _key(self, token: str) -> str:
        return token.lower() if self.lowercase else token

    def __call__(self, tokens: Sequence[str]) -> list[str]:
        return [self.table.get(self._key(t), self.default) for t in tokens]


def _accuracy(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
    pairs = [(p, g) for ps, gs in zip(predicted, gold, strict=True) for p, g in zip(ps, gs, strict=True)]
    if not pairs:
        raise ValueError("no tokens to score")
    return sum(p == g for p, g in pairs) / len(pairs)


def scores(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], bio: bool) -> dict[str, float]:
    """Token accuracy, plus entity precision / recall / F1 (seqeval) when the tags are BIO."""
    metrics = {"token_accuracy": _accuracy(predicted, gold)}
    if bio:
        entity = entity_scores(gold, predicted)
        metrics.update({"entity_precision": entity["precision"], "entity_recall": entity["recall"],
                        "entity_f1": entity["f1"]})
    return metrics


class Tagging:
    """Sentences -> token ids, and tag ids -> tags, with the run's vocabulary and tag set."""

    def __init__(self, vocab: Vocab, tags: LabelSet, lowercase: bool) -> None:
        self.vocab, self.tags, self.lowercase = vocab, tags, lowercase

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return self.vocab.encode([t.lower() if self.lowercase else t for t in tokens])

    @torch.no_grad()
    def predict(self, model: SequenceTagger, sentences: Sequence[Sequence[str]],
                batch_size: int = 128) -> list[list[str]]:
        """The tags of each (non-empty) sentence, in the input order."""
        encoded = [self.encode(tokens) for tokens in sentences]
        result: list[list[str]] = [[] for _ in sentences]
        lengths = [len(ids) for ids in encoded]
        for batch in bucketed_batches(lengths, batch_size, shuffle=False):
            batch = [i for i in batch if lengths[i] > 0]
            if not batch:
                continue
            tokens, batch_lengths = pad_sequences([encoded[i] for i in batch])  # (B, T), (B,)
            for index, ids in zip(batch, model.decode(tokens, batch_lengths), strict=True):
                result[index] = [self.tags.decode(i) for i in ids]
        return result


class TagTask:
    """The :class:`rnnkit.training.TrainTask` of tagging."""

    primary_metric = "token_accuracy"
    higher_is_better = True

    def __init__(self, model: SequenceTagger, tagging: Tagging, train, valid, batch_size: int, bio: bool) -> None:
        self.model, self.tagging, self.batch_size, self.bio = model, tagging, batch_size, bio
        self.metrics = ("token_accuracy",) + (("entity_precision", "entity_recall", "entity_f1") if bio else ())
        self.train_ids = [tagging.encode(s.tokens) for s in train]
        self.train_tags = [tagging.tags.encode_all(s.tags) for s in train]
        self.valid = list(valid)

    def train_batches(self, epoch: int, rng: random.Random) -> list[list[int]]:
        return bucketed_batches([len(ids) for ids in self.train_ids], self.batch_size, seed=rng.randrange(2**31))

    def loss(self, batch: list[int], carry: Any) -> tuple[Tensor, int, None]:
        tokens, lengths = pad_sequences([self.train_ids[i] for i in batch])  # (B, T), (B,)
        tags, _ = pad_sequences([self.train_tags[i] for i in batch])  # (B, T); padding ignored by the loss
        loss = self.model.loss(self.model(tokens, lengths), tags, lengths)
        # With a CRF the loss is a mean over sentences, without it over tokens.
        return loss, (len(batch) if self.model.crf is not None else int(lengths.sum())), None

    def evaluate(self, split: str) -> dict[str, float]:
        predicted = self.tagging.predict(self.model, [s.tokens for s in self.valid])
        return scores(predicted, [s.tags for s in self.valid], self.bio)


def _non_empty(records, what: str) -> list:
    sentences = [r for r in records if len(r.tokens) > 0]
    if not sentences:
        raise ValueError(f"the {what} data holds no tagged sentence")
    return sentences


def prepare(settings: dict[str, Any], run_dir: str | Path) -> tuple[TagTask, dict[str, Any]]:
    """Read the tagged sentences, build and save the vocabulary and tag set, build the model."""
    for key in ("batch_size", "min_freq"):
        check_size(key, settings[key])
    check_size("max_vocab", settings["max_vocab"], allow_zero=True)  # 0 = no limit
    run_dir = Path(run_dir)
    cache = settings.get("cache_dir")
    train = _non_empty(load_source(settings["data"], "tag", "train", cache_dir=cache, quiet=True), "training")
    sources = run_sources(settings)
    valid = _non_empty(load_source(sources["valid"], "tag", "valid", cache_dir=cache, quiet=True), "validation")
    lowercase = bool(settings["lowercase"])
    vocab = Vocab.build([[t.lower() if lowercase else t for t in s.tokens] for s in train], level="word",
                        min_freq=int(settings["min_freq"]), max_size=int(settings["max_vocab"]) or None)
    tags = LabelSet.build(sorted({t for s in train for t in s.tags}))
    unknown = sorted({t for s in valid for t in s.tags} - set(tags.labels))
    if unknown:
        raise ValueError(f"validation tags {unknown} never occur in training; known tags: {tags.labels}")
    bio = is_bio(tags.labels)
    run_dir.mkdir(parents=True, exist_ok=True)
    vocab.save(run_dir / "vocab.json")
    tags.save(run_dir / "tags.json")
    torch.manual_seed(int(settings["seed"]))
    config = SequenceTaggerConfig(
        vocab_size=len(vocab), num_tags=len(tags), cell=settings["cell"], hidden_size=int(settings["hidden_size"]),
        num_layers=int(settings["num_layers"]), dropout=float(settings["dropout"]),
        embedding_size=int(settings["embedding_size"]), bidirectional=bool(settings["bidirectional"]),
        crf=bool(settings["crf"]),
    )
    model = SequenceTagger(config)
    task = TagTask(model, Tagging(vocab, tags, lowercase), train, valid, int(settings["batch_size"]), bio)
    run_config = {"task": "tag", "model": config.to_dict(), "settings": jsonable_settings(settings),
                  "data": {**sources, "train_sentences": len(train),
                           "valid_sentences": len(valid), "bio": bio,
                           "baseline": "baseline.json"},
                  "vocab": "vocab.json", "tags": "tags.json"}
    # The baseline's table is data, not code: kept so evaluation can report it on any split later.
    baseline = MostFrequentTag([(s.tokens, s.tags) for s in train], lowercase)
    atomic_write_json(run_dir / "baseline.json", {"default": baseline.default, "table": baseline.table})
    return task, run_config


class TagRunner(TaskRunner):
    """A trained tagger loaded from its run directory."""

    task, model_kind = "tag", "a tagger"

    def build_model(self, model_config: Any) -> SequenceTagger:
        return SequenceTagger(model_config)

    def load_files(self) -> None:
        vocab = self.load_file(self.config.get("vocab", "vocab.json"), "vocabulary", Vocab.load, "vocab_size")
        tags = self.load_file(self.config.get("tags", "tags.json"), "tag set", LabelSet.load, "num_tags")
        self.tagging = Tagging(vocab, tags, bool(self.settings.get("lowercase", False)))
        self.baseline = self._load_baseline()

    def _load_baseline(self) -> MostFrequentTag | None:
        path = run_file(self.run_dir, self.config["data"].get("baseline", "baseline.json"), "baseline")
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            baseline = MostFrequentTag.from_table(data["table"], str(data["default"]),
                                                  bool(self.settings.get("lowercase", False)))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
            raise ValueError(f"{path}: not a baseline table ({err})") from None
        return baseline

    def predict(self, lines: Sequence[str]) -> list[list[str]]:
        """The tags of each whitespace-tokenized line (an empty line gets no tags)."""
        return self.tagging.predict(self.model, [line.split() for line in lines])

    def score(self, records: Sequence[Any], name: str) -> dict[str, float]:
        """Token accuracy (and entity scores for BIO tags), next to the most-frequent-tag baseline's."""
        records = _non_empty(records, name)
        gold = [s.tags for s in records]
        predicted = self.tagging.predict(self.model, [s.tokens for s in records])
        bio = bool(self.config["data"].get("bio", False))
        metrics = scores(predicted, gold, bio)
        if self.baseline is not None:
            for key, value in scores([self.baseline(s.tokens) for s in records], gold, bio).items():
                metrics[f"baseline_{key}"] = value
        metrics["sentences"] = float(len(records))
        metrics["tokens"] = float(sum(len(t) for t in gold))
        return metrics


load = TagRunner  # the task module's contract: load(run_dir) -> its runner
