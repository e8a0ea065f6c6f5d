"""Text classification: a many-to-one :class:`rnnkit.models.SequenceClassifier` on ``label<TAB>text`` data.

Each text is encoded (words by default, or characters), batched with texts of similar length
(:func:`rnnkit.data.bucketed_batches`) and read by a (bidirectional) recurrent layer whose outputs over the
valid steps are pooled (last / mean / max / attention, :class:`rnnkit.models.Pooling`) into class logits.

Metrics: ``accuracy``, ``macro_f1`` (the unweighted mean of per-class F1), and ``majority_accuracy``, the
accuracy of always answering the most frequent training label: the floor a classifier must beat.

Example::

    rnnkit train classify --data rotten-tomatoes --out runs/rt
    echo "a gorgeous, witty film" | rnnkit predict runs/rt
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit.checks import check_choice, check_size
from rnnkit.data import LabelSet, Vocab, bucketed_batches, load_source, pad_sequences
from rnnkit.metrics import accuracy, macro_f1
from rnnkit.models import POOLINGS, SequenceClassifier, SequenceClassifierConfig
from rnnkit.tasks import TaskRunner, common_defaults, jsonable_settings, run_sources

LEVELS = ("char", "word")

DEFAULTS: dict[str, Any] = common_defaults(
    data="rotten-tomatoes",
    level="word",
    lowercase=True,
    min_freq=2,
    max_vocab=20_000,
    max_length=100,
    cell="lstm",
    embedding_size=100,
    hidden_size=128,
    num_layers=1,
    bidirectional=True,
    pooling="max",
    dropout=0.5,
    batch_size=32,
    lr=2e-3,
)

HELP: dict[str, str] = {
    "level": "tokens: word (whitespace) | char",
    "lowercase": "lowercase the texts before tokenizing",
    "min_freq": "keep tokens seen at least this often in training (others become <unk>)",
    "max_vocab": "at most this many vocabulary entries, specials included (0 = no limit)",
    "max_length": "keep only the first N tokens of each text (0 = all)",
    "cell": "recurrent cell: lstm | gru | rnn",
    "embedding_size": "size of the token embeddings",
    "hidden_size": "state size H of each direction",
    "num_layers": "stacked recurrent layers",
    "bidirectional": "read each text in both directions",
    "pooling": "summary of the outputs: last | mean | max | attention",
    "dropout": "dropout on embeddings, between layers and before the output layer",
    "batch_size": "texts per batch (length-bucketed)",
}


def _check_settings(settings: dict[str, Any]) -> None:
    check_choice("level", settings["level"], LEVELS)
    check_choice("pooling", settings["pooling"], POOLINGS)
    for key in ("batch_size", "min_freq"):
        check_size(key, settings[key])
    for key in ("max_vocab", "max_length"):  # 0 = no limit
        check_size(key, settings[key], allow_zero=True)


class TextEncoder:
    """Texts -> id lists with the run's vocabulary, lowercasing and length limit (training and prediction)."""

    def __init__(self, vocab: Vocab, lowercase: bool, max_length: int) -> None:
        self.vocab, self.lowercase, self.max_length = vocab, lowercase, max_length

    def normalise(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = []
        for text in texts:
            ids = self.vocab.encode(self.normalise(text)) or [self.vocab.unk_id]  # an empty text: one <unk>
            encoded.append(ids[: self.max_length] if self.max_length else ids)
        return encoded


@torch.no_grad()
def predict_ids(model: SequenceClassifier, encoded: Sequence[list[int]], batch_size: int = 256) -> list[int]:
    """Class ids of encoded texts, batched by length, in the input order."""
    predictions = [0] * len(encoded)
    lengths = [len(ids) for ids in encoded]
    for batch in bucketed_batches(lengths, batch_size, shuffle=False):
        tokens, batch_lengths = pad_sequences([encoded[i] for i in batch])  # (B, T), (B,)
        for index, label in zip(batch, model.predict(tokens, batch_lengths).tolist(), strict=True):
            predictions[index] = label
    return predictions


def scores(predicted: Sequence[int], gold: Sequence[int], majority: int, num_classes: int) -> dict[str, float]:
    return {"accuracy": accuracy(predicted, gold),
            "macro_f1": macro_f1(predicted, gold, labels=list(range(num_classes))),
            "majority_accuracy": accuracy([majority] * len(gold), gold)}


class ClassifyTask:
    """The :class:`rnnkit.training.TrainTask` of classification."""

    primary_metric = "accuracy"
    higher_is_better = True
    metrics = ("accuracy", "macro_f1", "majority_accuracy")

    def __init__(self, model: SequenceClassifier, train: tuple[list[list[int]], list[int]],
                 valid: tuple[list[list[int]], list[int]], majority: int, batch_size: int) -> None:
        self.model = model
        self.train_ids, self.train_labels = train
        self.valid_ids, self.valid_labels = valid
        self.majority, self.batch_size = majority, batch_size

    def train_batches(self, epoch: int, rng: random.Random) -> list[list[int]]:
        return bucketed_batches([len(ids) for ids in self.train_ids], self.batch_size, seed=rng.randrange(2**31))

    def loss(self, batch: list[int], carry: Any) -> tuple[Tensor, int, None]:
        tokens, lengths = pad_sequences([self.train_ids[i] for i in batch])  # (B, T), (B,)
        labels = torch.tensor([self.train_labels[i] for i in batch])  # (B,)
        return self.model.loss(self.model(tokens, lengths), labels), len(batch), None

    def evaluate(self, split: str) -> dict[str, float]:
        predicted = predict_ids(self.model, self.valid_ids)
        return scores(predicted, self.valid_labels, self.majority, self.model.config.num_classes)


def _majority(labels: Sequence[int]) -> int:
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))  # ties: the first label


def prepare(settings: dict[str, Any], run_dir: str | Path) -> tuple[ClassifyTask, dict[str, Any]]:
    """Read the labelled texts, build and save the vocabulary and label set, build the model."""
    _check_settings(settings)
    run_dir = Path(run_dir)
    cache = settings.get("cache_dir")
    train_records = load_source(settings["data"], "classify", "train", cache_dir=cache, quiet=True)
    sources = run_sources(settings)
    valid_records = load_source(sources["valid"], "classify", "valid", cache_dir=cache, quiet=True)
    if not train_records or not valid_records:
        raise ValueError("classification needs at least one training and one validation example")
    lowercase = bool(settings["lowercase"])
    texts = [r.text.lower() if lowercase else r.text for r in train_records]
    vocab = Vocab.build(texts, level=settings["level"], min_freq=int(settings["min_freq"]),
                        max_size=int(settings["max_vocab"]) or None)
    labels = LabelSet.build(sorted({r.label for r in train_records}))
    unknown = sorted({r.label for r in valid_records} - set(labels.labels))
    if unknown:
        raise ValueError(f"validation labels {unknown} never occur in training; known labels: {labels.labels}")
    run_dir.mkdir(parents=True, exist_ok=True)
    vocab.save(run_dir / "vocab.json")
    labels.save(run_dir / "labels.json")
    encoder = TextEncoder(vocab, lowercase, int(settings["max_length"]))
    train = (encoder([r.text for r in train_records]), labels.encode_all(r.label for r in train_records))
    valid = (encoder([r.text for r in valid_records]), labels.encode_all(r.label for r in valid_records))
    torch.manual_seed(int(settings["seed"]))
    config = SequenceClassifierConfig(
        vocab_size=len(vocab), num_classes=len(labels), cell=settings["cell"],
        hidden_size=int(settings["hidden_size"]), num_layers=int(settings["num_layers"]),
        dropout=float(settings["dropout"]), embedding_size=int(settings["embedding_size"]),
        bidirectional=bool(settings["bidirectional"]), pooling=settings["pooling"],
    )
    model = SequenceClassifier(config)
    majority = _majority(train[1])
    task = ClassifyTask(model, train, valid, majority, int(settings["batch_size"]))
    run_config = {"task": "classify", "model": config.to_dict(), "settings": jsonable_settings(settings),
                  "data": {**sources, "train_examples": len(train[0]),
                           "valid_examples": len(valid[0]), "majority_label": labels.decode(majority)},
                  "vocab": "vocab.json", "labels": "labels.json"}
    return task, run_config


class ClassifyRunner(TaskRunner):
    """A trained classifier loaded from its run directory."""

    task, model_kind = "classify", "a classifier"

    def build_model(self, model_config: Any) -> SequenceClassifier:
        return SequenceClassifier(model_config)

    def load_files(self) -> None:
        self.vocab = self.load_file(self.config.get("vocab", "vocab.json"), "vocabulary", Vocab.load, "vocab_size")
        self.labels = self.load_file(self.config.get("labels", "labels.json"), "label set", LabelSet.load,
                                     "num_classes")
        self.encoder = TextEncoder(self.vocab, bool(self.settings.get("lowercase", False)),
                                   int(self.settings.get("max_length", 0)))

    def predict(self, lines: Sequence[str]) -> list[str]:
        """The predicted label of each text."""
        lines = list(lines)
        if not lines:
            return []
        return [self.labels.decode(i) for i in predict_ids(self.model, self.encoder(lines))]

    def score(self, records: Sequence[Any], name: str) -> dict[str, float]:
        """Accuracy, macro-F1 and the majority-class accuracy (the training set's most frequent label)."""
        if not records:
            raise ValueError(f"{name} holds no examples")
        unknown = sorted({r.label for r in records} - set(self.labels.labels))
        if unknown:
            raise ValueError(f"labels {unknown} in {name} were not seen in training; known: {self.labels.labels}")
        gold = self.labels.encode_all(r.label for r in records)
        predicted = predict_ids(self.model, self.encoder([r.text for r in records]))
        majority = self.labels.encode(self.config["data"]["majority_label"])
        return {**scores(predicted, gold, majority, len(self.labels)), "examples": float(len(records))}


load = ClassifyRunner  # the task module's contract: load(run_dir) -> its runner
