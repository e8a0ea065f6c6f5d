"""Translation: an attention encoder-decoder (:class:`rnnkit.seq2seq.Seq2Seq`) on ``source<TAB>target`` pairs.

Training is teacher-forced (or scheduled sampling, Bengio et al. 2015) cross-entropy; validation decodes
greedily and reports exact match, BLEU and chrF (sacrebleu); :meth:`TranslateRunner.evaluate` decodes with
beam search. Tokens are characters by default (the ``dates`` and ``numbers`` datasets), or words, or BPE
subwords (``--level bpe``, the ``tokenizers`` library).

Example::

    rnnkit train translate --data dates --out runs/dates --time-budget 240
    echo "mardi 5 mars 2024" | rnnkit translate runs/dates --beam 5
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit.checkpoint import load_weights, read_config
from rnnkit.checks import check_int
from rnnkit.data import BPETokenizer, Vocab, bucketed_batches, load_source, load_tokenizer, pad_sequences
from rnnkit.decoding import Hypothesis, beam_search, greedy_decode, length_limits
from rnnkit.metrics import bleu, chrf, exact_match
from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig, make_schedule
from rnnkit.tasks import check_vocabulary_size, common_defaults, run_file, split_source

LEVELS = ("char", "word", "bpe")
SCHEDULES = ("constant", "linear", "exponential", "inverse-sigmoid")
# Defaults of each schedule's constant (Bengio et al. 2015, section 2.4): the ratio falls from 1 towards 0
# over roughly 10,000 steps.
SCHEDULE_K = {"constant": 0.0, "linear": 1e-4, "exponential": 0.9997, "inverse-sigmoid": 1000.0}
_SCHEDULE_ARG = {"linear": "slope", "exponential": "k", "inverse-sigmoid": "k"}

DEFAULTS: dict[str, Any] = common_defaults(
    data="dates",
    level="char",
    bpe_vocab_size=4000,
    cell="gru",
    embedding_size=32,
    hidden_size=128,
    num_layers=1,
    decoder="luong",
    attention="general",
    input_feeding=False,
    dropout=0.0,
    label_smoothing=0.0,
    coverage=False,
    copy_attention=False,
    tie_weights=False,
    share_embeddings=False,
    coverage_penalty=0.0,
    no_repeat_ngram=0,
    max_len_a=2.0,
    max_len_b=10,
    teacher_forcing="constant",
    teacher_forcing_ratio=1.0,
    schedule_k=0.0,
    batch_size=64,
    max_train_examples=0,
    eval_examples=1000,
    beam_size=5,
    alpha=0.0,
    epochs=20,
    lr=3e-3,
    eval_every=200,
    checkpoint_every=200,
)

HELP: dict[str, str] = {
    "level": "tokens: char | word | bpe (subwords trained on the training targets and sources)",
    "bpe_vocab_size": "vocabulary size of each BPE tokenizer (level bpe)",
    "cell": "recurrent cell of encoder and decoder: gru | lstm",
    "embedding_size": "size of the token embeddings",
    "hidden_size": "decoder state size; a bidirectional encoder gives each direction half",
    "num_layers": "stacked layers in encoder and decoder",
    "decoder": "luong (RNN then attention) | bahdanau (attention then RNN) | none (no attention)",
    "attention": "dot | general | concat | additive | scaled-dot | location | local-m | local-p",
    "input_feeding": "Luong input feeding: the previous attentional state joins the next input",
    "dropout": "dropout between layers and on embeddings",
    "teacher_forcing": "constant | linear | exponential | inverse-sigmoid (scheduled sampling)",
    "schedule_k": "the schedule's constant: linear slope, exponential k < 1, inverse-sigmoid k (0 = default)",
    "teacher_forcing_ratio": "the ratio of the constant schedule (1 = always feed the gold previous token)",
    "batch_size": "sentence pairs per batch (length-bucketed)",
    "max_train_examples": "use only the first N training pairs (0 = all)",
    "eval_examples": "validation pairs decoded at each evaluation (0 = all)",
    "beam_size": "beam size at final evaluation and in `rnnkit translate`",
    "alpha": "length normalisation exponent: score = log p / len^alpha",
    "label_smoothing": "epsilon of the label-smoothed training loss (0 = plain cross-entropy)",
    "coverage": "coverage attention (Tu et al. 2016): past attention enters the score (additive | concat)",
    "copy_attention": "pointer-generator (See et al. 2017): copy source tokens; builds one shared vocabulary",
    "tie_weights": "decoder output layer uses the decoder embedding matrix (needs embedding size == hidden size)",
    "share_embeddings": "one embedding for encoder and decoder; builds one shared vocabulary",
    "coverage_penalty": "beta of the GNMT coverage penalty in beam search (0 = off)",
    "no_repeat_ngram": "never repeat an n-gram of this size in an output (0 = off)",
    "max_len_a": "output length limit: max_len_a * source length + max_len_b tokens, per sentence",
    "max_len_b": "see max_len_a",
}


def _tokenizer(level: str, texts: Sequence[str], bpe_vocab_size: int):
    if level == "bpe":
        return BPETokenizer.train(texts, vocab_size=bpe_vocab_size)
    return Vocab.build(texts, level=level)


@dataclass
class Pairs:
    """Encoded sentence pairs: source ids, target ids with BOS and EOS, and the raw target text."""

    sources: list[list[int]]
    targets: list[list[int]]
    source_text: list[str]
    target_text: list[str]


def encode_pairs(records, source_vocab, target_vocab, limit: int = 0) -> Pairs:
    records = list(records)[:limit] if limit else list(records)
    if not records:
        raise ValueError("no sentence pairs to train or evaluate on")
    return Pairs(
        [source_vocab.encode(r.source) or [source_vocab.unk_id] for r in records],
        [target_vocab.encode(r.target, add_bos=True, add_eos=True) for r in records],
        [r.source for r in records],
        [r.target for r in records],
    )


def make_batch(pairs: Pairs, indices: Sequence[int]) -> dict[str, Tensor]:
    """Pad one batch: src (B, S), src_lengths (B,), tgt_in (B, T) = BOS y_1..y_n, tgt_out (B, T) = y_1..EOS."""
    src, src_lengths = pad_sequences([pairs.sources[i] for i in indices])  # (B, S), (B,)
    tgt, _ = pad_sequences([pairs.targets[i] for i in indices])  # (B, T + 1)
    return {"src": src, "src_lengths": src_lengths, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}


def decode_texts(model: Seq2Seq, target_vocab, sources: Sequence[list[int]], *, beam_size: int = 1,
                 alpha: float = 0.0, n_best: int = 1, max_len: int | None = None,
                 batch_size: int = 128, coverage_penalty: float = 0.0, no_repeat_ngram: int = 0,
                 max_len_a: float = 2.0, max_len_b: int = 10) -> list[list[Hypothesis]]:
    """Decode encoded sources in batches (greedy for beam_size 1, else beam search), best first; each output at
    most ``max_len`` or else max_len_a * its source length + max_len_b tokens."""
    model.eval()
    results: list[list[Hypothesis]] = []
    with torch.no_grad():
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            src, src_lengths = pad_sequences(chunk)
            limit = max_len or length_limits(src_lengths, max_len_a, max_len_b)
            state = model.start(src, src_lengths)
            if beam_size == 1:
                results += greedy_decode(model, state, bos_id=model.bos_id, eos_id=model.eos_id,
                                         pad_id=model.pad_id, max_len=limit,
                                         no_repeat_ngram_size=no_repeat_ngram).hypotheses()
            else:
                results += beam_search(model, state, bos_id=model.bos_id, eos_id=model.eos_id,
                                       pad_id=model.pad_id, beam_size=beam_size, n_best=n_best,
                                       max_len=limit, alpha=alpha, coverage_penalty=coverage_penalty,
                                       no_repeat_ngram_size=no_repeat_ngram)
    return results


def hypothesis_text(target_vocab, hypothesis: Hypothesis) -> str:
    return target_vocab.decode(hypothesis.tokens.tolist())  # specials (the EOS) are skipped


def score_texts(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return {"exact_match": exact_match(hypotheses, references), "bleu": bleu(hypotheses, references),
            "chrf": chrf(hypotheses, references)}


class TranslateTask:
    """The :class:`rnnkit.training.TrainTask` of translation."""

    primary_metric = "exact_match"
    higher_is_better = True

    def __init__(self, model: Seq2Seq, source_vocab, target_vocab, train: Pairs, valid: Pairs,
                 settings: dict[str, Any]) -> None:
        self.model = model
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        self.train, self.valid = train, valid
        self.batch_size = int(settings["batch_size"])
        self.eval_examples = int(settings["eval_examples"])
        name = settings["teacher_forcing"]
        k = float(settings["schedule_k"]) or SCHEDULE_K[name]
        self.schedule = (make_schedule("constant", value=float(settings["teacher_forcing_ratio"]))
                         if name == "constant" else make_schedule(name, **{_SCHEDULE_ARG[name]: k}))
        self.teacher_forcing_ratio = 1.0
        self.decode_options = decode_options(settings)
        self._lengths = [len(s) + len(t) for s, t in zip(train.sources, train.targets, strict=True)]

    def begin_step(self, step: int) -> None:
        self.teacher_forcing_ratio = self.schedule(step)

    def train_batches(self, epoch: int, rng: random.Random):
        seed = rng.randrange(2**31)
        return bucketed_batches(self._lengths, self.batch_size, seed=seed)

    def batch_loss(self, batch: dict[str, Tensor], teacher_forcing_ratio: float = 1.0,
                   label_smoothing: float | None = None) -> tuple[Tensor, int]:
        """Mean token loss (label-smoothed as the model is configured, unless ``label_smoothing`` says otherwise)
        and the number of target tokens."""
        logits = self.model(batch["src"], batch["src_lengths"], batch["tgt_in"],
                            teacher_forcing_ratio=teacher_forcing_ratio)  # (B, T, V)
        n_tokens = int((batch["tgt_out"] != self.model.pad_id).sum())
        return self.model.loss(logits, batch["tgt_out"], label_smoothing=label_smoothing), n_tokens

    def loss(self, batch: Sequence[int], carry: Any) -> tuple[Tensor, int, None]:
        loss, n_tokens = self.batch_loss(make_batch(self.train, batch), self.teacher_forcing_ratio)
        return loss, n_tokens, None

    def evaluate(self, split: str) -> dict[str, float]:
        pairs = self.valid
        n = len(pairs.sources) if not self.eval_examples else min(self.eval_examples, len(pairs.sources))
        indices = list(range(n))
        total, tokens = 0.0, 0
        for start in range(0, n, 256):
            loss, count = self.batch_loss(make_batch(pairs, indices[start:start + 256]), label_smoothing=0.0)
            total += float(loss) * count
            tokens += count
        hypotheses = decode_texts(self.model, self.target_vocab, pairs.sources[:n], **self.decode_options)
        texts = [hypothesis_text(self.target_vocab, h[0]) for h in hypotheses]
        return {"loss": total / tokens, **score_texts(texts, pairs.target_text[:n])}


def decode_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The decoding settings of a run (their defaults for runs made before they existed), checked."""
    options = {key: settings.get(key, DEFAULTS[key])
               for key in ("coverage_penalty", "no_repeat_ngram", "max_len_a", "max_len_b")}
    check_int("no_repeat_ngram", options["no_repeat_ngram"], 0)
    penalty = options["coverage_penalty"]
    if isinstance(penalty, bool) or not isinstance(penalty, int | float) or not penalty >= 0:
        raise ValueError(f"coverage_penalty must be a number >= 0, got {options['coverage_penalty']!r}")
    length_limits(torch.ones(1, dtype=torch.long), options["max_len_a"], options["max_len_b"])  # checks both
    return options


def _shared_vocabulary(settings: dict[str, Any]) -> bool:
    """Copy attention and shared embeddings need one vocabulary for source and target."""
    return bool(settings["copy_attention"]) or bool(settings["share_embeddings"])


def _model_config(settings: dict[str, Any], source_vocab, target_vocab) -> Seq2SeqConfig:
    decoder = settings["decoder"]
    return Seq2SeqConfig(
        source_vocab_size=len(source_vocab), target_vocab_size=len(target_vocab),
        embedding_size=int(settings["embedding_size"]), hidden_size=int(settings["hidden_size"]),
        num_layers=int(settings["num_layers"]), cell=settings["cell"], decoder=decoder,
        attention=None if decoder == "none" else settings["attention"],
        input_feeding=bool(settings["input_feeding"]) and decoder == "luong",
        dropout=float(settings["dropout"]), label_smoothing=float(settings["label_smoothing"]),
        coverage=bool(settings["coverage"]), copy_attention=bool(settings["copy_attention"]),
        tie_weights=bool(settings["tie_weights"]), share_embeddings=bool(settings["share_embeddings"]),
    )


def prepare(settings: dict[str, Any], run_dir: str | Path) -> tuple[TranslateTask, dict[str, Any]]:
    """Read the pairs, build and save the tokenizers, build the model."""
    if settings["level"] not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {settings['level']!r}")
    if settings["teacher_forcing"] not in SCHEDULES:
        raise ValueError(f"teacher_forcing must be one of {', '.join(SCHEDULES)}, got {settings['teacher_forcing']!r}")
    run_dir = Path(run_dir)
    train_records = load_source(settings["data"], "translate", "train")
    valid_records = load_source(split_source(settings, "valid"), "translate", "valid")
    limit = int(settings["max_train_examples"])
    texts = list(train_records)[:limit] if limit else list(train_records)
    shared = _shared_vocabulary(settings)  # one tokenizer trained on both sides
    source_texts = [r.source for r in texts] + ([r.target for r in texts] if shared else [])
    source_vocab = _tokenizer(settings["level"], source_texts, int(settings["bpe_vocab_size"]))
    target_vocab = source_vocab if shared else _tokenizer(settings["level"], [r.target for r in texts],
                                                          int(settings["bpe_vocab_size"]))
    run_dir.mkdir(parents=True, exist_ok=True)
    source_vocab.save(run_dir / "source_vocab.json")
    target_vocab.save(run_dir / "target_vocab.json")
    torch.manual_seed(int(settings["seed"]))
    config = _model_config(settings, source_vocab, target_vocab)
    model = Seq2Seq.build(config)
    task = TranslateTask(model, source_vocab, target_vocab, encode_pairs(train_records, source_vocab, target_vocab,
                                                                          limit),
                         encode_pairs(valid_records, source_vocab, target_vocab), settings)
    run_config = {"task": "translate", "model": model.config_dict(), "settings": _jsonable(settings),
                  "data": {"train": str(settings["data"]), "valid": split_source(settings, "valid"),
                           "train_pairs": len(task.train.sources), "valid_pairs": len(task.valid.sources)},
                  "vocab": {"source": "source_vocab.json", "target": "target_vocab.json"}}
    return task, run_config


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


class TranslateRunner:
    """A trained translation model loaded from its run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.config = read_config(self.run_dir)
        if self.config.get("task") != "translate":
            raise ValueError(f"{self.run_dir}: config.json is for task {self.config.get('task')!r}, not translate")
        try:
            self.model = Seq2Seq.build(Seq2SeqConfig(**self.config["model"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{self.run_dir / 'config.json'}: the model config does not describe a Seq2Seq "
                             f"({err})") from None
        try:
            names = self.config["vocab"]["source"], self.config["vocab"]["target"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"{self.run_dir / 'config.json'}: no source and target vocabularies ({err!r})") from None
        source_path = run_file(self.run_dir, names[0], "source vocabulary")
        target_path = run_file(self.run_dir, names[1], "target vocabulary")
        self.source_vocab = load_tokenizer(source_path)
        self.target_vocab = load_tokenizer(target_path)
        check_vocabulary_size(source_path, len(self.source_vocab), self.config["model"], "source_vocab_size",
                              "source vocabulary")
        check_vocabulary_size(target_path, len(self.target_vocab), self.config["model"], "target_vocab_size",
                              "target vocabulary")
        load_weights(self.run_dir, self.model)
        self.model.eval()
        self.settings = self.config.get("settings", {})

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return [self.source_vocab.encode(line) or [self.source_vocab.unk_id] for line in lines]

    def translate(self, lines: Sequence[str], *, beam_size: int | None = None, n_best: int = 1,
                  alpha: float | None = None) -> list[list[dict[str, Any]]]:
        """Per line, its n-best translations: {"text", "score", "log_prob", "tokens", "attention"}."""
        beam = int(beam_size if beam_size is not None else self.settings.get("beam_size", 5))
        if n_best > beam:
            raise ValueError(f"n_best must be <= beam size {beam}, got {n_best}")
        encoded = self.encode(lines)
        hypotheses = decode_texts(self.model, self.target_vocab, encoded, beam_size=beam,
                                  n_best=n_best, alpha=float(alpha if alpha is not None
                                                            else self.settings.get("alpha", 0.0)),
                                  **decode_options(self.settings))
        results = []
        for line, ids, options in zip(lines, encoded, hypotheses, strict=True):
            results.append([{
                "text": hypothesis_text(self.target_vocab, h),
                "score": h.score, "log_prob": h.log_prob,
                "source_tokens": self.source_vocab.tokenize(line),
                "tokens": [self.target_vocab.id_to_token(i) for i in h.tokens.tolist()],
                # (L, S) over this line's own source positions (the batch was padded to its longest line)
                "attention": None if h.attention is None else h.attention[:, :len(ids)].tolist(),
            } for h in options])
        return results

    def evaluate(self, source: str | None = None, split: str = "test", *, beam_size: int | None = None,
                 limit: int = 0) -> dict[str, float]:
        """Exact match, BLEU and chrF of beam-search translations on ``split`` of ``source`` (default: the
        training data's own split)."""
        data = source or self.config["data"]["train"]
        records = list(load_source(data, "translate", split))
        if limit:
            records = records[:limit]
        outputs = self.translate([r.source for r in records], beam_size=beam_size)
        texts = [o[0]["text"] for o in outputs]
        metrics = score_texts(texts, [r.target for r in records])
        metrics["examples"] = float(len(records))
        return metrics


def load(run_dir: str | Path) -> TranslateRunner:
    return TranslateRunner(run_dir)
