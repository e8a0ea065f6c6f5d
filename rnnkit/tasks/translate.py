"""Translation: an attention encoder-decoder (:class:`rnnkit.seq2seq.Seq2Seq`) on ``source<TAB>target`` pairs.

Training is teacher-forced (or scheduled sampling, Bengio et al. 2015) cross-entropy; validation decodes
greedily and reports exact match, BLEU and chrF (sacrebleu), and with word-level targets the G2P word and phoneme
error rates; :meth:`TranslateRunner.evaluate` decodes with beam search. Tokens are characters by default (the
``dates`` and ``numbers`` datasets), or words, or BPE subwords (``--level bpe``, the ``tokenizers`` library); each
side can have its own (``--source-level char --target-level word``: letters in, phoneme symbols out). Token ids
are memory-mapped from the run directory (:mod:`rnnkit.data.tokenized`), so a million pairs fit in memory.

Example::

    rnnkit train translate --data dates --out runs/dates --time-budget 240
    echo "mardi 5 mars 2024" | rnnkit translate runs/dates --beam 5
    rnnkit train translate --data cmudict --source-level char --target-level word --out runs/g2p
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit.checks import check_choice, check_int
from rnnkit.data import (
    SOURCE_VOCAB_FILE,
    TARGET_VOCAB_FILE,
    TOKEN_LEVELS,
    TokenizedPairs,
    bucketed_batches,
    load_tokenizer,
    pad_sequences,
    source_file,
    token_batches,
    tokenize_corpus,
    trained_sources,
)
from rnnkit.data import (
    alternatives as further_references,
)
from rnnkit.decoding import Ensemble, Hypothesis, length_limits
from rnnkit.decoding import translate as decode_batch
from rnnkit.metrics import bleu, chrf, exact_match, phoneme_error_rate, word_error_rate
from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig, make_schedule
from rnnkit.tasks import TaskRunner, common_defaults, jsonable_settings, run_sources

LEVELS = TOKEN_LEVELS
SCHEDULES = ("constant", "linear", "exponential", "inverse-sigmoid")
# Defaults of each schedule's constant (Bengio et al. 2015, section 2.4): the ratio falls from 1 towards 0
# over roughly 10,000 steps.
SCHEDULE_K = {"constant": 0.0, "linear": 1e-4, "exponential": 0.9997, "inverse-sigmoid": 1000.0}
_SCHEDULE_ARG = {"linear": "slope", "exponential": "k", "inverse-sigmoid": "k"}
SAMPLES = 10  # validation translations kept from each evaluation for the log (log_samples picks how many)

DEFAULTS: dict[str, Any] = common_defaults(
    data="dates",
    level="char",
    source_level="",
    target_level="",
    bpe_vocab_size=4000,
    cell="gru",
    embedding_size=32,
    hidden_size=128,
    num_layers=1,
    encoder_layers=0,
    encoder_size=0,
    decoder="luong",
    attention="general",
    input_feeding=False,
    dropout=0.0,
    encoder_output_dropout=0.0,
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
    batch_tokens=0,
    max_train_examples=0,
    eval_examples=1000,
    beam_size=5,
    alpha=0.0,
    lr=3e-3,
    select_metric="chrf",
    patience=10,
    eval_every=200,
    checkpoint_every=200,
)

HELP: dict[str, str] = {
    "level": "tokens: char | word | bpe (subwords trained on the training targets and sources)",
    "source_level": "tokens of the source side: char | word | bpe (default: --level)",
    "target_level": "tokens of the target side: char | word | bpe (default: --level); word also reports the G2P "
                    "word error rate (wer) and phoneme error rate (per)",
    "bpe_vocab_size": "vocabulary size of each BPE tokenizer (level bpe)",
    "cell": "recurrent cell of encoder and decoder: gru | lstm",
    "embedding_size": "size of the token embeddings",
    "hidden_size": "decoder state size; a bidirectional encoder gives each direction half",
    "num_layers": "stacked layers in encoder and decoder",
    "encoder_layers": "stacked layers in the encoder alone (0 = --num-layers)",
    "encoder_size": "size of each encoder output, both directions together (0 = --hidden-size)",
    "decoder": "luong (RNN then attention) | bahdanau (attention then RNN) | none (no attention)",
    "attention": "dot | general | concat | additive | scaled-dot | location | local-m | local-p",
    "input_feeding": "Luong input feeding: the previous attentional state joins the next input",
    "dropout": "dropout between layers and on embeddings",
    "encoder_output_dropout": "dropout on the encoder outputs the attention reads",
    "teacher_forcing": "constant | linear | exponential | inverse-sigmoid (scheduled sampling)",
    "schedule_k": "the schedule's constant: linear slope, exponential k < 1, inverse-sigmoid k (0 = default)",
    "teacher_forcing_ratio": "the ratio of the constant schedule (1 = always feed the gold previous token)",
    "batch_size": "sentence pairs per batch (length-bucketed)",
    "batch_tokens": "batch by target tokens instead: at most N padded target tokens a batch (0 = by --batch-size)",
    "select_metric": "validation metric that picks the best checkpoint and drives early stopping: chrf | bleu | "
                     "loss | exact_match | wer | per (wer, per: word-level targets)",
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


def make_batch(pairs: TokenizedPairs, indices: Sequence[int]) -> dict[str, Tensor]:
    """Pad one batch: src (B, S), src_lengths (B,), tgt_in (B, T) = BOS y_1..y_n, tgt_out (B, T) = y_1..EOS."""
    src, src_lengths = pad_sequences([pairs.sources[i] for i in indices])  # (B, S), (B,)
    tgt, _ = pad_sequences([pairs.targets[i] for i in indices])  # (B, T + 1)
    return {"src": src, "src_lengths": src_lengths, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}


def decode_texts(model: Seq2Seq, sources: Sequence[list[int]], *, method: str = "beam", batch_size: int = 128,
                 **options: Any) -> list[list[Hypothesis]]:
    """Decode encoded sources in batches of ``batch_size`` with :func:`rnnkit.decoding.translate` (``method``
    and ``options``: beam_size, n_best, alpha, max_len, ... go to it); per source its hypotheses, best first."""
    model.eval()
    results: list[list[Hypothesis]] = []
    for start in range(0, len(sources), batch_size):
        src, src_lengths = pad_sequences(sources[start:start + batch_size])  # (B, S), (B,)
        results += decode_batch(model, src, src_lengths, method=method, **options)
    return results


def decode_options(settings: dict[str, Any], method: str = "beam") -> dict[str, Any]:
    """A run's decoding settings as options of :func:`rnnkit.decoding.translate` for ``method`` (their defaults
    for runs made before they existed), checked: the per-sentence length limit, n-gram blocking and, for beam
    search, the coverage penalty."""
    options = {key: settings.get(key, DEFAULTS[key])
               for key in ("coverage_penalty", "no_repeat_ngram", "max_len_a", "max_len_b")}
    check_int("no_repeat_ngram", options["no_repeat_ngram"], 0)
    penalty = options["coverage_penalty"]
    if isinstance(penalty, bool) or not isinstance(penalty, int | float) or not penalty >= 0:
        raise ValueError(f"coverage_penalty must be a number >= 0, got {options['coverage_penalty']!r}")
    length_limits(torch.ones(1, dtype=torch.long), options["max_len_a"], options["max_len_b"])  # checks both
    chosen = {"max_len_a": options["max_len_a"], "max_len_b": options["max_len_b"],
              "no_repeat_ngram_size": options["no_repeat_ngram"]}
    if method == "beam":
        chosen["coverage_penalty"] = penalty
    return chosen


def hypothesis_text(target_vocab, hypothesis: Hypothesis) -> str:
    return target_vocab.decode(hypothesis.tokens.tolist())  # specials (the EOS) are skipped


def score_texts(hypotheses: Sequence[str], references: Sequence[str], phonemes: bool = False,
                alternatives: Sequence[Sequence[str]] | None = None) -> dict[str, float]:
    """Exact match, BLEU, chrF; with ``phonemes`` (word-level targets) also the G2P ``wer`` and ``per`` against
    the one reference and, given ``alternatives`` (per item, its further references), ``wer_any`` and
    ``per_any`` against whichever of its references is closest."""
    scores = {"exact_match": exact_match(hypotheses, references), "bleu": bleu(hypotheses, references),
              "chrf": chrf(hypotheses, references)}
    if phonemes:
        scores["wer"] = word_error_rate(hypotheses, references)
        scores["per"] = phoneme_error_rate(hypotheses, references)
        if alternatives is not None:
            scores["wer_any"] = word_error_rate(hypotheses, references, alternatives=alternatives)
            scores["per_any"] = phoneme_error_rate(hypotheses, references, alternatives=alternatives)
    return scores


class TranslateTask:
    """The :class:`rnnkit.training.TrainTask` of translation."""

    primary_metric = "chrf"  # exact match stays 0 on real sentences; chrF moves from the first evaluation
    higher_is_better = True

    def __init__(self, model: Seq2Seq, source_vocab, target_vocab, train: TokenizedPairs, valid: TokenizedPairs,
                 settings: dict[str, Any], alternatives: Mapping[str, Sequence[str]] | None = None) -> None:
        """``alternatives``: further references of validation sources ({source: (reference, ...)}, CMUdict's
        other pronunciations); with word-level targets the evaluations then add ``wer_any`` and ``per_any``."""
        self.model = model
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        self.train, self.valid = train, valid
        self.batch_size = int(settings["batch_size"])
        self.batch_tokens = int(settings["batch_tokens"])
        self.eval_examples = int(settings["eval_examples"])
        self.alternatives = dict(alternatives or {}) if self.phonemes else {}
        self.metrics = ("loss", "exact_match", "bleu", "chrf") + (("wer", "per") if self.phonemes else ()) + (
            ("wer_any", "per_any") if self.alternatives else ())
        self._samples: list[dict[str, str]] = []
        name = settings["teacher_forcing"]
        k = float(settings["schedule_k"]) or SCHEDULE_K[name]
        self.schedule = (make_schedule("constant", value=float(settings["teacher_forcing_ratio"]))
                         if name == "constant" else make_schedule(name, **{_SCHEDULE_ARG[name]: k}))
        self.teacher_forcing_ratio = 1.0
        self.decode_options = decode_options(settings, "greedy")
        self._lengths = train.lengths().tolist()
        self._target_lengths = (train.targets.lengths() - 1).tolist()  # T: BOS y_1..y_n in, y_1..EOS out

    @property
    def phonemes(self) -> bool:
        """Word-level targets: the G2P word and phoneme error rates are reported too."""
        return self.target_vocab.level == "word"

    def begin_step(self, step: int) -> None:
        self.teacher_forcing_ratio = self.schedule(step)

    def train_batches(self, epoch: int, rng: random.Random):
        seed = rng.randrange(2**31)
        if self.batch_tokens:
            return token_batches(self._target_lengths, self.batch_tokens, seed=seed)
        return bucketed_batches(self._lengths, self.batch_size, seed=seed)

    def batch_loss(self, batch: dict[str, Tensor], teacher_forcing_ratio: float = 1.0,
                   label_smoothing: float | None = None) -> tuple[Tensor, int]:
        """Mean token loss (label-smoothed as the model is configured, unless ``label_smoothing`` says otherwise)
        and the number of target tokens."""
        n_tokens = int((batch["tgt_out"] != self.model.pad_id).sum())
        if teacher_forcing_ratio == 1.0:  # the output layer and its loss fused, where the decoder allows it
            loss = self.model.teacher_forced_loss(batch["src"], batch["src_lengths"], batch["tgt_in"],
                                                  batch["tgt_out"], label_smoothing=label_smoothing)
            return loss, n_tokens
        logits = self.model(batch["src"], batch["src_lengths"], batch["tgt_in"],
                            teacher_forcing_ratio=teacher_forcing_ratio)  # (B, T, V)
        return self.model.loss(logits, batch["tgt_out"], label_smoothing=label_smoothing), n_tokens

    def loss(self, batch: Sequence[int], carry: Any) -> tuple[Tensor, int, None]:
        loss, n_tokens = self.batch_loss(make_batch(self.train, batch), self.teacher_forcing_ratio)
        return loss, n_tokens, None

    def evaluate(self, split: str) -> dict[str, float]:
        pairs = self.valid
        n = len(pairs.sources) if not self.eval_examples else min(self.eval_examples, len(pairs.sources))
        # the loss over batches of similar lengths (as training batches), so that a batch is padded to little more
        # than its own sentences and the longest sentences do not set the size of every batch
        lengths = pairs.lengths()[:n].tolist()
        indices = sorted(range(n), key=lengths.__getitem__)
        total, tokens = 0.0, 0
        for start in range(0, n, self.batch_size):
            loss, count = self.batch_loss(make_batch(pairs, indices[start:start + self.batch_size]),
                                          label_smoothing=0.0)
            total += float(loss) * count
            tokens += count
        hypotheses = decode_texts(self.model, pairs.sources[:n], method="greedy", **self.decode_options)
        texts = [hypothesis_text(self.target_vocab, h[0]) for h in hypotheses]
        references = pairs.target_text[:n]
        shown = range(min(n, SAMPLES))
        self._samples = [{"source": pairs.source_text[i], "reference": references[i], "hypothesis": texts[i]}
                         for i in shown]
        further = [self.alternatives.get(source, ()) for source in pairs.source_text[:n]] if self.alternatives else None
        return {"loss": total / tokens, **score_texts(texts, references, phonemes=self.phonemes, alternatives=further)}

    def samples(self, n: int) -> list[dict[str, str]]:
        """The first ``n`` validation pairs of the last evaluation with the model's greedy translations."""
        return self._samples[:n]


def _model_config(settings: dict[str, Any], source_vocab, target_vocab) -> Seq2SeqConfig:
    decoder = settings["decoder"]
    return Seq2SeqConfig(
        source_vocab_size=len(source_vocab), target_vocab_size=len(target_vocab),
        embedding_size=int(settings["embedding_size"]), hidden_size=int(settings["hidden_size"]),
        num_layers=int(settings["num_layers"]), encoder_layers=int(settings.get("encoder_layers", 0)) or None,
        encoder_size=int(settings.get("encoder_size", 0)) or None,
        cell=settings["cell"], decoder=decoder,
        attention=None if decoder == "none" else settings["attention"],
        input_feeding=bool(settings["input_feeding"]) and decoder == "luong",
        dropout=float(settings["dropout"]),
        encoder_output_dropout=float(settings.get("encoder_output_dropout", 0.0)),  # 0 in runs made before it
        label_smoothing=float(settings["label_smoothing"]),
        coverage=bool(settings["coverage"]), copy_attention=bool(settings["copy_attention"]),
        tie_weights=bool(settings["tie_weights"]), share_embeddings=bool(settings["share_embeddings"]),
    )


def prepare(settings: dict[str, Any], run_dir: str | Path) -> tuple[TranslateTask, dict[str, Any]]:
    """Read the pairs, build and save the tokenizers, build the model."""
    check_choice("level", settings["level"], LEVELS)
    check_choice("teacher_forcing", settings["teacher_forcing"], SCHEDULES)
    source_level = settings["source_level"] or settings["level"]
    target_level = settings["target_level"] or settings["level"]
    run_dir = Path(run_dir)
    sources = run_sources(settings)
    cache = settings.get("cache_dir")
    corpus = tokenize_corpus(
        run_dir, source_file(sources["train"], "translate", "train", cache_dir=cache, quiet=True),
        source_file(sources["valid"], "translate", "valid", cache_dir=cache, quiet=True),
        source_level=source_level, target_level=target_level, bpe_vocab_size=int(settings["bpe_vocab_size"]),
        limit=int(settings["max_train_examples"]), progress=settings.get("progress"),
        # copy attention and shared embeddings need one vocabulary for source and target
        shared=bool(settings["copy_attention"]) or bool(settings["share_embeddings"]))
    source_vocab, target_vocab = corpus.source_tokenizer, corpus.target_tokenizer
    torch.manual_seed(int(settings["seed"]))
    config = _model_config(settings, source_vocab, target_vocab)
    model = Seq2Seq.build(config)
    further = further_references(sources["valid"], cache_dir=cache, quiet=True)
    task = TranslateTask(model, source_vocab, target_vocab, corpus.train, corpus.valid, settings, alternatives=further)
    run_config = {"task": "translate", "model": model.config_dict(), "settings": jsonable_settings(settings),
                  "data": {**sources, "train_pairs": len(task.train.sources), "valid_pairs": len(task.valid.sources)},
                  "vocab": {"source": SOURCE_VOCAB_FILE, "target": TARGET_VOCAB_FILE}}
    return task, run_config


class TranslateRunner(TaskRunner):
    """A trained translation model loaded from its run directory."""

    task, model_kind = "translate", "a Seq2Seq"
    ensemble_runs: tuple[Path, ...] = ()  # the other runs decoding with this one (see load_ensemble)

    def build_model(self, model_config: Any) -> Seq2Seq:
        return Seq2Seq.build(Seq2SeqConfig(**model_config))

    def load_files(self) -> None:
        try:
            names = self.config["vocab"]["source"], self.config["vocab"]["target"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"{self.run_dir / 'config.json'}: no source and target vocabularies ({err!r})") from None
        self.source_vocab = self.load_file(names[0], "source vocabulary", load_tokenizer, "source_vocab_size")
        self.target_vocab = self.load_file(names[1], "target vocabulary", load_tokenizer, "target_vocab_size")

    @property
    def beam_size(self) -> int:
        """The run's own beam size (its ``beam_size`` setting): what decoding uses unless told otherwise."""
        return int(self.settings.get("beam_size", 5))

    def decoding_options(self, beam_size: int | None = None, alpha: float | None = None) -> dict[str, Any]:
        """The run's decoding settings as options of :func:`rnnkit.decoding.beam_search`, each overridden
        where given."""
        return {"beam_size": int(beam_size if beam_size is not None else self.beam_size),
                "alpha": float(alpha if alpha is not None else self.settings.get("alpha", 0.0)),
                **decode_options(self.settings)}

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return [self.source_vocab.encode(line) or [self.source_vocab.unk_id] for line in lines]

    def translate(self, lines: Sequence[str], *, beam_size: int | None = None, n_best: int = 1,
                  alpha: float | None = None) -> list[list[dict[str, Any]]]:
        """Per line, its n-best translations by beam search (default: the run's beam_size and alpha):
        {"text", "score", "log_prob", "source_tokens", "tokens", "attention"}."""
        encoded = self.encode(lines)
        hypotheses = decode_texts(self.model, encoded, n_best=n_best, **self.decoding_options(beam_size, alpha))
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

    def evaluate(self, source: str | None = None, split: str | None = None, **options: Any) -> dict[str, float]:
        """:meth:`TaskRunner.evaluate`; on a catalog dataset that lists further references for its sources
        (``cmudict``: every pronunciation of a word), word-level targets are also scored against any of them
        (``wer_any``, ``per_any``). Those lists cover the valid and test words only: a train split gets neither."""
        data, split = self.evaluation_source(source, split)
        records, name = self.read(data, split), f"{data} ({split or 'file'})"
        self.check_ensemble_unseen(records, name)
        listed = split in ("valid", "test")
        further = further_references(data, cache_dir=self.settings.get("cache_dir"), quiet=True) if listed else {}
        return self.score(records, name, alternatives=further or None, **options)

    def check_ensemble_unseen(self, records: Sequence[Any], name: str) -> None:
        """Refuse to score ``records`` with an ensemble one of whose other runs was trained on more of their
        sources than this run was: the score would count examples a member learned. The runs' own training data
        (``RUN_DIR/data/train``) is compared, not the names of their sources, so runs trained on one split under
        two names (``cmudict``, ``cmudict:every=1``) pass, and runs trained on the same data as this one pass
        whatever is scored."""
        if not self.ensemble_runs:
            return
        sources = {record.source for record in records}
        own = len(sources & trained_sources(self.run_dir))
        for run_dir in self.ensemble_runs:
            seen = len(sources & trained_sources(run_dir))
            if seen > own:
                raise ValueError(
                    f"the ensemble run {run_dir} was trained on {seen:,} of the {len(sources):,} sources of {name}, "
                    f"{self.run_dir} on {own:,}: its score would count examples one of its models learned; ensemble "
                    f"runs trained on the same split as {self.run_dir}"
                )

    def score(self, records: Sequence[Any], name: str, *, beam_size: int | None = None, limit: int = 0,
              alternatives: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
        """Exact match, BLEU and chrF of beam-search translations (of the first ``limit`` pairs; 0: all); for
        word-level targets the G2P error rates, also against ``alternatives`` ({source: further references})
        when given."""
        records = list(records)[:limit] if limit else list(records)
        if not records:
            raise ValueError(f"{name} holds no sentence pairs")
        outputs = self.translate([r.source for r in records], beam_size=beam_size)
        texts = [o[0]["text"] for o in outputs]
        further = None if alternatives is None else [alternatives.get(r.source, ()) for r in records]
        metrics = score_texts(texts, [r.target for r in records], phonemes=self.target_vocab.level == "word",
                              alternatives=further)
        metrics["examples"] = float(len(records))
        return metrics


def load_ensemble(run_dirs: Sequence[str | Path]) -> TranslateRunner:
    """The first run's runner decoding with every run's model as one :class:`rnnkit.decoding.Ensemble` (their
    probabilities averaged at each step). Sources, beam size and the other decoding settings are the first
    run's; the runs must share the source and target vocabularies (the same data and levels give the same).
    Evaluating refuses data that another run was trained on more of than the first
    (:meth:`TranslateRunner.check_ensemble_unseen`)."""
    runners = [TranslateRunner(run_dir) for run_dir in run_dirs]
    first = runners[0]
    for other in runners[1:]:
        for side in ("source", "target"):
            if getattr(first, f"{side}_vocab").to_json() != getattr(other, f"{side}_vocab").to_json():
                raise ValueError(f"an ensemble's runs must share their {side} vocabulary, but {other.run_dir}'s "
                                 f"differs from {first.run_dir}'s")
    if len(runners) > 1:
        first.model = Ensemble([runner.model for runner in runners]).eval()
        first.ensemble_runs = tuple(runner.run_dir for runner in runners[1:])
    return first


load = TranslateRunner  # the task module's contract: load(run_dir) -> its runner
