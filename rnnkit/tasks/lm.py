"""Language modelling: a recurrent :class:`rnnkit.models.LanguageModel` on a contiguous text stream.

The training text becomes one token stream (characters, or words with ``<eos>`` ending each line), cut into
``batch_size`` contiguous rows (:func:`rnnkit.data.batchify`) and walked in chunks of ``bptt`` steps
(:func:`rnnkit.data.bptt_chunks`). The state at the end of one chunk starts the next (truncated BPTT,
Williams & Peng 1990; Zaremba et al. 2014); the trainer detaches it between chunks.

Metrics: ``loss`` = mean cross-entropy in nats per token, L = -(1/N) sum_t ln p(x_{t+1} | x_{<=t});
``bits_per_char`` = L / ln 2 (character level), ``perplexity`` = exp(L) (word level).

Example::

    rnnkit train lm --data shakespeare --out runs/shakespeare --time-budget 300
    rnnkit generate runs/shakespeare --prompt "ROMEO:" --temperature 0.8
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit.checks import check_choice, check_size
from rnnkit.data import PAD_ID, Vocab, batchify, bptt_chunks, load_source, token_stream
from rnnkit.metrics import bits_per_char, perplexity
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.tasks import TaskRunner, common_defaults, jsonable_settings, run_sources

LEVELS = ("char", "word")

DEFAULTS: dict[str, Any] = common_defaults(
    data="shakespeare",
    level="char",
    min_freq=1,
    max_vocab=0,
    cell="lstm",
    embedding_size=64,
    hidden_size=256,
    num_layers=1,
    dropout=0.0,
    tie_weights=False,
    init_scale=0.0,
    batch_size=32,
    bptt=64,
    eval_batch_size=64,
    eval_tokens=100_000,
    lr=3e-3,
    eval_every=500,
    checkpoint_every=500,
)

HELP: dict[str, str] = {
    "level": "tokens: char (every character, newlines included) | word (whitespace words, <eos> per line)",
    "min_freq": "keep tokens seen at least this often in training (others become <unk>)",
    "max_vocab": "at most this many vocabulary entries, specials included (0 = no limit)",
    "cell": "recurrent cell: lstm | gru | rnn",
    "embedding_size": "size of the token embeddings",
    "hidden_size": "state size H of each layer",
    "num_layers": "stacked recurrent layers",
    "dropout": "dropout on embeddings, between layers and before the output (Zaremba et al. 2014)",
    "tie_weights": "share the embedding and output matrices (needs embedding_size == hidden_size)",
    "init_scale": "draw every parameter uniform in [-s, s] (Zaremba et al. 2014: 0.1); 0 = each layer's default",
    "batch_size": "contiguous rows the training stream is cut into",
    "bptt": "steps per truncated-BPTT chunk (the state is carried across chunks, gradients are not)",
    "eval_batch_size": "rows of the validation stream",
    "eval_tokens": "validation tokens scored at each evaluation during training (0 = all)",
}


def _check_settings(settings: dict[str, Any]) -> None:
    check_choice("level", settings["level"], LEVELS)
    for key in ("batch_size", "bptt", "eval_batch_size", "min_freq"):
        check_size(key, settings[key])
    for key in ("eval_tokens", "max_vocab"):  # 0 = no limit
        check_size(key, settings[key], allow_zero=True)


@torch.no_grad()
def stream_loss(model: LanguageModel, stream: Tensor, batch_size: int, bptt: int) -> tuple[float, int]:
    """Mean cross-entropy (nats/token) of ``model`` over a (N,) stream read as ``batch_size`` contiguous rows,
    carrying the state across chunks as in training; returns ``(loss, number of scored tokens)``."""
    was_training = model.training
    model.eval()
    rows = batchify(stream, min(batch_size, max(1, stream.numel() // 2)))  # (B, L)
    total, count, state = 0.0, 0, None
    for inputs, targets in bptt_chunks(rows, bptt):  # (B, t), (B, t)
        logits, state = model(inputs, state)  # (B, t, V)
        n = targets.numel()
        total += float(model.loss(logits, targets)) * n
        count += n
    model.train(was_training)
    return total / count, count


def _metrics(loss: float, level: str) -> dict[str, float]:
    extra = {"bits_per_char": bits_per_char(loss)} if level == "char" else {"perplexity": perplexity(loss)}
    return {"loss": loss, **extra}


class LanguageModelTask:
    """The :class:`rnnkit.training.TrainTask` of language modelling (truncated BPTT over one stream)."""

    primary_metric = "loss"
    higher_is_better = False

    def __init__(self, model: LanguageModel, train: Tensor, valid: Tensor, settings: dict[str, Any]) -> None:
        self.model = model
        self.level = settings["level"]
        self.metrics = ("loss", "bits_per_char" if self.level == "char" else "perplexity")
        self.bptt = int(settings["bptt"])
        self.rows = batchify(train, int(settings["batch_size"]))  # (B, L)
        limit = int(settings["eval_tokens"])
        self.valid = valid[:limit] if limit else valid
        self.eval_batch_size = int(settings["eval_batch_size"])

    def train_batches(self, epoch: int, rng: random.Random) -> Iterator[tuple[Tensor, Tensor]]:
        # Chunks must come in order: each row is read left to right so the carried state fits the next chunk.
        return bptt_chunks(self.rows, self.bptt)

    def loss(self, batch: tuple[Tensor, Tensor], carry: Any) -> tuple[Tensor, int, Any]:
        inputs, targets = batch  # (B, t), (B, t)
        logits, state = self.model(inputs, carry)  # (B, t, V)
        return self.model.loss(logits, targets), targets.numel(), state

    def evaluate(self, split: str) -> dict[str, float]:
        loss, _ = stream_loss(self.model, self.valid, self.eval_batch_size, self.bptt)
        return _metrics(loss, self.level)


def prepare(settings: dict[str, Any], run_dir: str | Path) -> tuple[LanguageModelTask, dict[str, Any]]:
    """Read the text, build and save the vocabulary, build the model."""
    _check_settings(settings)
    run_dir = Path(run_dir)
    cache = settings.get("cache_dir")
    train_text = load_source(settings["data"], "lm", "train", cache_dir=cache, quiet=True)
    sources = run_sources(settings)
    valid_text = load_source(sources["valid"], "lm", "valid", cache_dir=cache, quiet=True)
    vocab = Vocab.build([train_text] if settings["level"] == "char" else train_text.split("\n"),
                        level=settings["level"], min_freq=int(settings["min_freq"]),
                        max_size=int(settings["max_vocab"]) or None)
    run_dir.mkdir(parents=True, exist_ok=True)
    vocab.save(run_dir / "vocab.json")
    train, valid = token_stream(train_text, vocab), token_stream(valid_text, vocab)  # (N,), (M,)
    if valid.numel() < 2:
        raise ValueError(f"the validation text {sources['valid']} has fewer than 2 tokens")
    torch.manual_seed(int(settings["seed"]))
    config = LanguageModelConfig(
        vocab_size=len(vocab), cell=settings["cell"], hidden_size=int(settings["hidden_size"]),
        num_layers=int(settings["num_layers"]), dropout=float(settings["dropout"]),
        embedding_size=int(settings["embedding_size"]), tie_weights=bool(settings["tie_weights"]),
        init_scale=float(settings["init_scale"]),
        pad_id=PAD_ID,
    )
    model = LanguageModel(config)
    task = LanguageModelTask(model, train, valid, settings)
    run_config = {"task": "lm", "model": config.to_dict(), "settings": jsonable_settings(settings),
                  "data": {**sources, "level": settings["level"],
                           "train_tokens": int(train.numel()), "valid_tokens": int(valid.numel())},
                  "vocab": "vocab.json"}
    return task, run_config


class LanguageModelRunner(TaskRunner):
    """A trained language model loaded from its run directory."""

    task, model_kind = "lm", "a language model"

    def build_model(self, model_config: Any) -> LanguageModel:
        return LanguageModel(model_config)

    def load_files(self) -> None:
        self.vocab = self.load_file(self.config.get("vocab", "vocab.json"), "vocabulary", Vocab.load, "vocab_size")
        self.level = self.vocab.level

    def score(self, text: str, name: str) -> dict[str, float]:
        """Cross-entropy (nats/token) and bits per character or perplexity over the whole text."""
        stream = token_stream(text, self.vocab)  # (N,)
        if stream.numel() < 2:
            raise ValueError(f"{name} has fewer than 2 tokens to score")
        loss, count = stream_loss(self.model, stream, int(self.settings.get("eval_batch_size", 64)),
                                  int(self.settings.get("bptt", 64)))
        return {**_metrics(loss, self.level), "tokens": float(count)}

    def generate(self, prompt: str = "", length: int = 200, temperature: float = 0.8, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None) -> str:
        """The prompt followed by ``length`` sampled tokens (temperature 0: greedy)."""
        ids = self.vocab.encode(prompt) if prompt else []
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        tokens = self.model.generate(torch.tensor(ids, dtype=torch.long), length, temperature=temperature,
                                     top_k=top_k, top_p=top_p, generator=generator)  # (length,)
        continuation = self.vocab.decode(tokens.tolist())
        if self.level == "char":
            return prompt + continuation
        return " ".join(part for part in (prompt, continuation) if part)

    def generate_stream(self, prompt: str = "", length: int = 200, temperature: float = 0.8,
                        top_k: int | None = None, top_p: float | None = None,
                        seed: int | None = None) -> Iterator[dict[str, Any]]:
        """:meth:`generate`, one token at a time as it is drawn (constant memory: only the state is kept).

        Yields ``{"id", "token", "text"}`` per token: ``text`` is what it adds to the output (a word with its
        leading space, "" for a special token), so ``prompt + "".join(texts)`` equals :meth:`generate` with
        the same arguments.
        """
        from rnnkit.streaming import LanguageModelStreamer

        ids = self.vocab.encode(prompt) if prompt else []
        written = bool(prompt)  # word level: a space goes before every word but the output's first
        tokens = LanguageModelStreamer(self.model).generate_stream(ids, length, temperature=temperature,
                                                                   top_k=top_k, top_p=top_p, seed=seed)
        for token_id in tokens:
            token = self.vocab.id_to_token(token_id)
            text = self.vocab.decode([token_id])  # "" for <pad>, <bos>, <eos>
            if self.level != "char" and text:
                text = (" " if written else "") + text
                written = True
            yield {"id": token_id, "token": token, "text": text}


load = LanguageModelRunner  # the task module's contract: load(run_dir) -> its runner
