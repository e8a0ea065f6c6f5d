"""rnnkit against JoeyNMT 2.3.0: the same data, the same model, the same time budget, side by side.

Both toolkits train the model of issue 21 (GRU encoder-decoder with additive attention, embeddings 256, a
bidirectional encoder of 2 x 256, a decoder of 512, BPE 8k per side, batches of 64 sentence pairs; see
benchmarks/peers/model.py for the graph and why rnnkit builds it as ``--decoder luong --attention additive
--input-feeding``) for the same number of seconds, one after the other, each in its own process with torch's
default threads; then each translates the same held-out sources with beam search and one scorer (sacrebleu,
through rnnkit.metrics) scores both. Printed side by side: target tokens/s, the fraction of the sgemm peak
that represents (analytic FLOPs, :func:`benchmarks.peers.model.training_flops`, over the peak measured in
this process), peak RSS of each training process, parameters, BLEU, chrF and exact match after the budget.

Data: a catalog dataset or a folder of ``train.tsv`` / ``valid.tsv`` / ``test.tsv`` (``--data``; default
``cmudict``: grapheme-to-phoneme, letters -> ARPAbet phonemes). The script segments it once with BPE, one
tokenizer per side (rnnkit's BPETokenizer, the ``tokenizers`` library), and writes the same segmented files
for both toolkits, which then train at word level on them: both see the very same tokens, so target tokens/s
compare one to one and the vocabularies, hence the embedding and output layers, have the same sizes. A side
of space-separated symbols (``--target-units symbols``, the default for cmudict: phonemes) is segmented as
one string of symbols, so that pieces span several phonemes (``R_IY``): that is what gives the phoneme side
an 8k vocabulary. Scores compare the de-segmented output with the raw references.

JoeyNMT lives in its own virtual environment, created on first use (``--venv``, default
``$RNNKIT_CACHE/venvs/joeynmt-2.3.0`` or ``benchmarks/.venvs/joeynmt-2.3.0``, git-ignored): ``pip install
joeynmt==2.3.0 importlib_metadata`` with a constraints file that pins torch==2.13.0, as rnnkit does. On torch
2.13 the installed copy needs two patches, applied here idempotently (:data:`PATCHES`). Nothing of JoeyNMT is
committed. benchmarks/peers/joeynmt_runner.py runs inside that environment and gives JoeyNMT a time budget.

Usage: ``python -m benchmarks.peers.joeynmt [--budget 600] [--data cmudict] [--quick] [--output PATH]``.
Writes benchmarks/results/joeynmt-DATA.md (``--quick``: joeynmt-DATA.quick.md; tiny model, 3,000 pairs, 20 s
each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch
import yaml

from benchmarks.harness import ROOT, Peak, load_average, machine, rate, write_results
from benchmarks.peers.joeynmt_runner import peak_rss_mib
from benchmarks.peers.model import Counts, Dims, parameter_count, training_flops

RESULTS = ROOT / "benchmarks" / "results"  # joeynmt-<dataset>.md
JOEYNMT = "joeynmt==2.3.0"
TORCH = "torch==2.13.0"  # rnnkit's pin (pyproject.toml, constraints.txt)
IMPORTLIB_METADATA = "importlib_metadata==10.2.0"  # JoeyNMT imports it; torch 2.13's Python lacks nothing else
RUNNER = Path(__file__).resolve().parent / "joeynmt_runner.py"
UNITS = ("text", "symbols")
# Symbols of a "symbols" side become private-use characters, so that BPE sees each symbol as one letter.
_PRIVATE = 0xE000
_UNKNOWN = chr(0xF8FF)  # the last private-use character: a symbol unseen in training (BPE makes it <unk>)
_JOIN = "_"  # joins the symbols of one piece in the written files: R_IY


@dataclass(frozen=True)
class Patch:
    """One edit to the installed JoeyNMT: ``old`` becomes ``new`` in ``path`` (relative to site-packages)."""

    path: str
    old: str
    new: str
    why: str


PATCHES = (
    Patch("joeynmt/builders.py", '            "verbose": False,\n',
          '            # "verbose": False,  (patched by rnnkit\'s benchmark: torch 2.13 removed it)\n',
          "ReduceLROnPlateau no longer takes verbose= (torch >= 2.7 removed it)"),
    Patch("joeynmt/tokenizers.py",
          "        self.spm.SetVocabulary(vocab._itos)  # pylint: disable=protected-access\n",
          "        if hasattr(self.spm, \"SetVocabulary\"):  # patched by rnnkit's benchmark\n"
          "            self.spm.SetVocabulary(vocab._itos)  # pylint: disable=protected-access\n",
          "the installed sentencepiece (0.2.x) has no SentencePieceProcessor.SetVocabulary: skip it if absent"),
)

FULL = dict(embedding=256, encoder_hidden=256, decoder_hidden=512, bpe=8000, budget=600.0, test=2000, dev=500)
QUICK = dict(embedding=16, encoder_hidden=16, decoder_hidden=32, bpe=300, budget=20.0, test=100, dev=50,
             train=3000)


# ----------------------------------------------------------------------------------------------------------
# Data: one BPE segmentation per side, the same files for both toolkits
# ----------------------------------------------------------------------------------------------------------


class Side:
    """The BPE segmentation of one side of the corpus (``units``: "text" or "symbols")."""

    def __init__(self, units: str, texts: list[str], vocab_size: int) -> None:
        from rnnkit.data import BPETokenizer

        if units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}, got {units!r}")
        self.units = units
        self.symbols: dict[str, str] = {}
        if units == "symbols":
            names = sorted({symbol for text in texts for symbol in text.split()})
            if len(names) >= ord(_UNKNOWN) - _PRIVATE:
                raise ValueError(f"at most {ord(_UNKNOWN) - _PRIVATE - 1} distinct symbols, got {len(names)}")
            self.symbols = {name: chr(_PRIVATE + i) for i, name in enumerate(names)}
            self.names = {char: name for name, char in self.symbols.items()}
        self.bpe = BPETokenizer.train([self._letters(text) for text in texts], vocab_size=vocab_size)

    def _letters(self, text: str) -> str:
        if self.units == "text":
            return text
        # an unknown symbol becomes a character BPE never saw: the piece <unk>
        return "".join(self.symbols.get(symbol, _UNKNOWN) for symbol in text.split())

    def pieces(self, text: str) -> list[str]:
        """``text`` as the pieces written to the files (no spaces inside a piece)."""
        pieces = self.bpe.tokenize(self._letters(text))
        if self.units == "text":
            return pieces
        return [piece if piece == "<unk>" else _JOIN.join(self.names[c] for c in piece.lstrip("▁"))
                for piece in pieces if piece != "▁"]

    def join(self, pieces: list[str]) -> str:
        """The text of written pieces (a model's output): the inverse of :meth:`pieces`."""
        if self.units == "text":
            return "".join(pieces).replace("▁", " ").strip()
        return " ".join(symbol for piece in pieces for symbol in piece.split(_JOIN))


@dataclass
class Corpus:
    """The segmented files (``folder/{train,dev,test}.{src,trg,tsv}``), the raw test pairs and statistics."""

    folder: Path
    test_sources: list[str]  # segmented, one line each, as both toolkits read them
    references: list[str]  # raw
    target_side: Side
    counts: Counts  # of the training set, EOS counted on the target side
    sizes: dict[str, int]


def prepare_corpus(data: str, folder: Path, bpe: int, units: tuple[str, str], dev: int, test: int,
                   train_limit: int = 0) -> Corpus:
    """Read ``data`` (catalog name or folder), learn BPE per side on the training pairs, write the files."""
    from rnnkit.data import load_source

    def read(split: str):
        source = Path(data) / f"{split}.tsv" if Path(data).is_dir() else data
        return list(load_source(str(source), "translate", split))

    train, valid, held_out = read("train"), read("valid")[:dev], read("test")[:test]
    if train_limit:
        train = train[:train_limit]
    sides = [Side(units[0], [p.source for p in train], bpe), Side(units[1], [p.target for p in train], bpe)]
    folder.mkdir(parents=True, exist_ok=True)
    lengths = []
    for split, pairs in (("train", train), ("dev", valid), ("test", held_out)):
        segmented = [(" ".join(sides[0].pieces(p.source)), " ".join(sides[1].pieces(p.target))) for p in pairs]
        (folder / f"{split}.src").write_text("".join(f"{s}\n" for s, _ in segmented), encoding="utf-8")
        (folder / f"{split}.trg").write_text("".join(f"{t}\n" for _, t in segmented), encoding="utf-8")
        (folder / f"{split}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in segmented), encoding="utf-8")
        if split == "train":
            lengths = [(len(s.split()), len(t.split()) + 1) for s, t in segmented]  # + EOS
        if split == "test":
            test_sources = [s for s, _ in segmented]
    return Corpus(folder, test_sources, [p.target for p in held_out], sides[1], Counts.of(lengths),
                  {"train": len(train), "dev": len(valid), "test": len(held_out)})


# ----------------------------------------------------------------------------------------------------------
# JoeyNMT's virtual environment
# ----------------------------------------------------------------------------------------------------------


def default_venv() -> Path:
    cache = os.environ.get("RNNKIT_CACHE")
    base = Path(cache).expanduser() / "venvs" if cache else ROOT / "benchmarks" / ".venvs"
    return base / "joeynmt-2.3.0"


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise FileNotFoundError(f"{venv} has no lib/python*/site-packages: not a virtual environment")
    return found[0]


def apply_patches(packages: Path) -> list[str]:
    """Apply :data:`PATCHES` to the JoeyNMT installed under ``packages``; each only once. Returns what was
    done to each ("applied" or "already applied"); a file that has neither form is an error."""
    done = []
    for patch in PATCHES:
        path = packages / patch.path
        text = path.read_text(encoding="utf-8")
        if patch.new in text:
            done.append(f"{patch.path}: already applied")
        elif text.count(patch.old) == 1:
            path.write_text(text.replace(patch.old, patch.new), encoding="utf-8")
            done.append(f"{patch.path}: applied")
        else:
            raise RuntimeError(f"{path}: expected the line {patch.old.strip()!r} once (JoeyNMT 2.3.0), found "
                               f"{text.count(patch.old)}; is this another JoeyNMT version?")
    return done


def ensure_joeynmt(venv: Path) -> list[str]:
    """Create ``venv`` with JoeyNMT 2.3.0 if it is missing (torch pinned to rnnkit's version), patch it."""
    python = venv / "bin" / "python"
    if not (python.exists() and (venv / ".installed").exists()):
        print(f"creating {venv} and installing {JOEYNMT} (pinned {TORCH})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # torch pinned to rnnkit's (never resolved unpinned: that pulls a multi-GB CUDA build); JoeyNMT's other
        # dependencies resolve freely (rnnkit's constraints.txt pins some of them where JoeyNMT cannot go)
        constraints = venv / "constraints.txt"
        constraints.write_text(f"{TORCH}\n")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-c", str(constraints), JOEYNMT, IMPORTLIB_METADATA], check=True)
        (venv / ".installed").touch()
    done = apply_patches(site_packages(venv))
    subprocess.run([str(python), "-c", "import joeynmt.training, joeynmt.prediction"], check=True)
    return done


# ----------------------------------------------------------------------------------------------------------
# The two runs
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one toolkit did: training figures, its model's parameters and its test translations."""

    name: str
    seconds: float  # training seconds the tokens were counted over
    steps: int
    target_tokens: int
    peak_rss_mib: float
    parameters: int
    vocab: tuple[int, int]
    hypotheses: list[str]  # segmented, one per test source
    decode_seconds: float
    note: str = ""

    @property
    def tokens_per_second(self) -> float:
        return self.target_tokens / self.seconds


def _wait(process: subprocess.Popen, label: str, budget: float) -> None:
    """Wait for a training process, saying how far it is every 30 s; raise if it failed."""
    started = next_report = time.monotonic()
    while process.poll() is None:
        time.sleep(1.0)
        if time.monotonic() >= next_report + 30:
            next_report += 30
            print(f"  {label}: {next_report - started:.0f} s (training budget {budget:.0f} s, after its setup)",
                  file=sys.stderr)
    if process.returncode != 0:
        raise RuntimeError(f"{label} failed with exit code {process.returncode}: see {process.args[-1]}")


def _run_logged(command: list[str], log: Path, label: str, budget: float, **options) -> None:
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, **options)
        process.args = [*command, str(log)]
        _wait(process, label, budget)


def rnnkit_child(report: Path, argv: list[str]) -> int:
    """``--child-rnnkit``: run the rnnkit CLI in this process as the ``rnnkit`` command does (subnormal floats
    flushed to zero first, rnnkit.denormals; JoeyNMT's command does not), then write its peak RSS to ``report``."""
    from rnnkit.cli import main as rnnkit_main
    from rnnkit.denormals import denormals_flushed, flush_denormals

    flush_denormals()
    flushed = denormals_flushed()
    if not flushed:
        raise RuntimeError("subnormal floats are not flushed in the rnnkit child: flushed too late")
    code = rnnkit_main(argv)
    report.write_text(json.dumps({"peak_rss_mib": peak_rss_mib(), "threads": torch.get_num_threads(),
                                  "subnormals_flushed": flushed}))
    return code or 0


def rnnkit_train_args(folder: Path, run_dir: Path, sizes: dict, lr: float) -> list[str]:
    """``rnnkit train translate`` arguments for the model and settings that JoeyNMT gets in
    :func:`joeynmt_config`. Periodic evaluation and checkpoints are off in both (rnnkit still validates on
    ``sizes["dev"]`` pairs at each epoch end, inside its budget, and once more after it)."""
    return [
        "train", "translate", "--data", str(folder / "train.tsv"), "--valid", str(folder / "dev.tsv"),
        "--out", str(run_dir), "--overwrite", "--level", "word", "--cell", "gru",
        "--embedding-size", str(sizes["embedding"]), "--hidden-size", str(sizes["decoder_hidden"]),
        "--decoder", "luong", "--attention", "additive", "--input-feeding", "--dropout", "0",
        "--batch-size", "64", "--lr", str(lr), "--clip-grad-norm", "5", "--epochs", "100000",
        "--time-budget", str(sizes["budget"]), "--eval-every", "1000000000", "--checkpoint-every", "1000000000",
        "--eval-examples", str(sizes["dev"]), "--eval-on-stop", "--log-every", "1", "--seed", "0",
        "--no-progress",
    ]


def run_rnnkit(corpus: Corpus, work: Path, sizes: dict, lr: float, beam: int) -> Run:
    run_dir = work / "rnnkit"
    train_args = rnnkit_train_args(corpus.folder, run_dir, sizes, lr)
    report = work / "rnnkit.json"
    _run_logged([sys.executable, "-m", "benchmarks.peers.joeynmt", "--child-rnnkit", str(report), "--", *train_args],
                work / "rnnkit.log", "rnnkit", sizes["budget"])
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trains = [e for e in events if e["event"] == "train"]
    stop = next(e for e in events if e["event"] == "stop")
    if not trains:
        raise RuntimeError(f"rnnkit finished no training step within {sizes['budget']} s: see {work / 'rnnkit.log'}")
    figures = json.loads(report.read_text())
    from rnnkit.tasks import translate

    model = translate.load(run_dir).model
    started = time.perf_counter()
    child = [sys.executable, "-m", "benchmarks.peers.joeynmt", "--child-rnnkit", str(work / "rnnkit-decode.json")]
    done = subprocess.run([*child, "--", "translate", str(run_dir), "--beam", str(beam)],
                          input="".join(f"{s}\n" for s in corpus.test_sources), capture_output=True, text=True,
                          check=True, cwd=ROOT)
    decode_seconds = time.perf_counter() - started
    hypotheses = done.stdout.split("\n")[: len(corpus.test_sources)]
    return Run("rnnkit", trains[-1]["wall_time"], stop["step"], sum(e["items"] for e in trains),
               figures["peak_rss_mib"], sum(p.numel() for p in model.parameters()),
               (model.encoder.embedding.num_embeddings, model.decoder.embedding.num_embeddings),
               hypotheses, decode_seconds,
               note=f"{stop['step']} steps, epoch {stop['epoch']}; tested: the model the run selected (step "
                    f"{stop['best_step'] or stop['step']})")


def joeynmt_config(corpus: Corpus, work: Path, sizes: dict, lr: float, beam: int, max_len: int) -> dict:
    from benchmarks.peers.joeynmt_runner import _model_config

    side = {"level": "word", "lowercase": False, "normalize": False, "max_length": 10_000, "min_length": 1,
            "voc_min_freq": 1, "voc_limit": 10**9}
    dims = Dims(1, 1, sizes["embedding"], sizes["encoder_hidden"], sizes["decoder_hidden"])
    return {
        "name": "rnnkit-benchmark", "model_dir": str(work / "joeynmt"), "use_cuda": False, "fp16": False,
        "random_seed": 0,
        "data": {"train": str(corpus.folder / "train"), "dev": str(corpus.folder / "dev"),
                 "test": str(corpus.folder / "test"), "dataset_type": "plain",
                 "src": {"lang": "src", **side}, "trg": {"lang": "trg", **side}},
        "testing": {"n_best": 1, "beam_size": beam, "beam_alpha": 0, "batch_size": 64, "batch_type": "sentence",
                    "max_output_length": max_len, "eval_metrics": ["bleu"],
                    "load_model": str(work / "joeynmt" / "latest.ckpt")},
        # JoeyNMT 2.3.0 needs a scheduler; "plateau" steps only after a validation, so none here: lr constant
        "training": {"optimizer": "adam", "learning_rate": lr, "learning_rate_min": 1e-12, "scheduling": "plateau",
                     "adam_betas": [0.9, 0.999], "clip_grad_norm": 5.0, "batch_size": 64,
                     "batch_type": "sentence", "normalization": "tokens", "loss": "crossentropy",
                     "label_smoothing": 0.0, "epochs": 100000, "validation_freq": 10**9, "logging_freq": 100,
                     "shuffle": True, "overwrite": True, "keep_best_ckpts": 1, "num_workers": 0},
        "model": _model_config(dims),
    }


def run_joeynmt(venv: Path, corpus: Corpus, work: Path, sizes: dict, lr: float, beam: int, max_len: int) -> Run:
    config = work / "joeynmt.yaml"
    config.write_text(yaml.safe_dump(joeynmt_config(corpus, work, sizes, lr, beam, max_len)))
    report = work / "joeynmt.json"
    python = str(venv / "bin" / "python")
    _run_logged([python, str(RUNNER), "train", str(config), "--budget", str(sizes["budget"]),
                 "--report", str(report)], work / "joeynmt.log", "JoeyNMT", sizes["budget"])
    figures = json.loads(report.read_text())
    started = time.perf_counter()
    output = work / "joeynmt-hyps"
    subprocess.run([python, "-m", "joeynmt", "test", str(config), "--output-path", str(output)], check=True,
                   capture_output=True, cwd=ROOT)
    decode_seconds = time.perf_counter() - started  # dev (small) and test, model loading included
    hypotheses = Path(f"{output}.test").read_text(encoding="utf-8").split("\n")[: len(corpus.test_sources)]
    flops = figures["flops"]
    return Run("JoeyNMT 2.3.0", figures["seconds"], figures["steps"], figures["target_tokens"],
               figures["peak_rss_mib"], figures["parameters"]["total"],
               (figures["vocab"]["source"], figures["vocab"]["target"]), hypotheses, decode_seconds,
               note=f"{figures['steps']} steps, epoch {figures['epochs']}; tested: the weights at the budget's end; "
                    f"its FLOPs counted by torch {flops['counted']:.0f} vs analytic {flops['analytic']:.0f}")


# ----------------------------------------------------------------------------------------------------------
# Scores and the table
# ----------------------------------------------------------------------------------------------------------


def scores(corpus: Corpus, hypotheses: list[str]) -> dict[str, float]:
    """BLEU, chrF and exact match of the de-segmented ``hypotheses``; for a side of symbols (phonemes) also the
    phoneme error rate (edit distance over symbols / reference length)."""
    from rnnkit.metrics import bleu, chrf, exact_match, phoneme_error_rate

    texts = [corpus.target_side.join(line.split()) for line in hypotheses]
    texts = [" ".join(t.replace("<unk>", " ").split()) for t in texts]
    figures = {"bleu": bleu(texts, corpus.references), "chrf": chrf(texts, corpus.references),
               "exact": exact_match(texts, corpus.references)}
    if corpus.target_side.units == "symbols":
        figures["per"] = phoneme_error_rate(texts, corpus.references)
    return figures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-rnnkit"]:
        return rnnkit_child(Path(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.joeynmt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="cmudict", help="catalog dataset or folder of train/valid/test.tsv")
    parser.add_argument("--source-units", choices=UNITS, default="text")
    parser.add_argument("--target-units", choices=UNITS, default=None,
                        help="default: symbols for cmudict (phonemes), else text")
    parser.add_argument("--budget", type=float, default=None, help="training seconds each (default 600)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate, both toolkits")
    parser.add_argument("--beam", type=int, default=5, help="beam size of the test translations, both")
    parser.add_argument("--only", choices=("rnnkit", "joeynmt"), default=None, help="run one toolkit")
    parser.add_argument("--quick", action="store_true", help="tiny model, 3,000 pairs, 20 s each")
    parser.add_argument("--venv", type=Path, default=None, help=f"JoeyNMT's environment ({default_venv()})")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-joeynmt")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"markdown file (default {RESULTS}/joeynmt-DATA.md)")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.budget is not None:
        if not args.budget > 0:
            parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
        sizes["budget"] = args.budget
    output = args.output or RESULTS / f"joeynmt-{Path(args.data).name}{'.quick' if args.quick else ''}.md"
    target_units = args.target_units or ("symbols" if args.data == "cmudict" else "text")
    load_before = load_average()
    venv = args.venv or default_venv()
    patches = ensure_joeynmt(venv) if args.only != "rnnkit" else []

    print(f"segmenting {args.data} with BPE {sizes['bpe']} per side", file=sys.stderr)
    corpus = prepare_corpus(args.data, args.work / "data", sizes["bpe"], (args.source_units, target_units),
                            sizes["dev"], sizes["test"], sizes.get("train", 0))
    max_len = 2 * max(len(s.split()) for s in corpus.test_sources) + 10  # rnnkit's rule, per batch there
    peak = Peak(0.5)
    for _ in range(3):
        peak.measure()
    runs = []
    if args.only != "joeynmt":
        print(f"rnnkit: training for {sizes['budget']:.0f} s", file=sys.stderr)
        runs.append(run_rnnkit(corpus, args.work, sizes, args.lr, args.beam))
    peak.measure()
    if args.only != "rnnkit":
        print(f"JoeyNMT: training for {sizes['budget']:.0f} s", file=sys.stderr)
        runs.append(run_joeynmt(venv, corpus, args.work, sizes, args.lr, args.beam, max_len))
    peak.measure()

    dims = Dims(*runs[0].vocab, sizes["embedding"], sizes["encoder_hidden"], sizes["decoder_hidden"])
    flops_per_token = training_flops(dims, corpus.counts) / corpus.counts.target_tokens
    mean_source = corpus.counts.source_tokens / corpus.counts.sentences
    mean_target = corpus.counts.target_tokens / corpus.counts.sentences
    # JoeyNMT appends EOS to every source sentence: one more source token per pair for its encoder and attention
    counts = corpus.counts
    with_source_eos = Counts(counts.sentences, counts.source_tokens + counts.sentences, counts.target_tokens,
                             counts.attention_pairs + counts.target_tokens)
    source_eos = training_flops(dims, with_source_eos) / training_flops(dims, counts) - 1
    rows = []
    for run in runs:
        layout = "rnnkit" if run.name == "rnnkit" else "joeynmt"
        expected = parameter_count(Dims(*run.vocab, sizes["embedding"], sizes["encoder_hidden"],
                                        sizes["decoder_hidden"]), layout)["total"]
        score = scores(corpus, run.hypotheses)
        rows.append(f"| {run.name} | {rate(run.tokens_per_second)} | "
                    f"{run.tokens_per_second * flops_per_token / peak.best:.1%} | {run.peak_rss_mib:,.0f} | "
                    f"{run.parameters:,} ({'=' if run.parameters == expected else '!='} analytic) | "
                    f"{score['bleu']:.1f} | {score['chrf']:.1f} | {score['exact']:.1%} | "
                    f"{format(score['per'], '.1%') if 'per' in score else '-'} | "
                    f"{run.decode_seconds:.0f} | {run.note} |")
    ratio = ""
    if len(runs) == 2:
        ratio = (f"rnnkit / JoeyNMT target tokens/s: **{runs[0].tokens_per_second / runs[1].tokens_per_second:.2f}x** "
                 f"(goal of issue 21: >= 2x).")
    command = " ".join(["python -m benchmarks.peers.joeynmt", *argv])
    lines = [
        "# rnnkit and JoeyNMT 2.3.0 side by side",
        "",
        f"`{command}`: torch {torch.__version__}, {machine()}, {torch.get_num_threads()} thread(s) in each "
        f"training process (one after the other, never together). Load average (1, 5, 15 min) before: "
        f"{load_before}; after: {load_average()}.",
        "",
        f"Data: {args.data}, {corpus.sizes['train']:,} training pairs, BPE {sizes['bpe']} per side "
        f"({args.source_units} -> {target_units}), the same segmented files for both; means per pair: "
        f"{mean_source:.2f} source and {mean_target:.2f} target tokens (EOS included). Model: GRU, additive "
        f"attention, embeddings {sizes['embedding']}, encoder 2 x {sizes['encoder_hidden']}, decoder "
        f"{sizes['decoder_hidden']}, vocabularies {dims.source_vocab:,} / {dims.target_vocab:,}; batches of 64 "
        f"pairs, Adam lr {args.lr:g}, gradient norm clipped at 5, no dropout; {sizes['budget']:.0f} s of "
        f"training each. Test: the first {corpus.sizes['test']:,} test pairs, beam {args.beam}, scored by "
        "sacrebleu (rnnkit.metrics) on the de-segmented output.",
        "",
        f"`% peak`: target tokens/s x {flops_per_token / 1e6:.1f} MFLOP per target token (the training set's "
        "matrix-product FLOPs of a training step, benchmarks/peers/model.py, real tokens only: padding is "
        f"waste) over the sgemm peak measured in this process, {peak.best / 1e9:.0f} GFLOP/s (median "
        f"{peak.median / 1e9:.0f}). Peak RSS: the training process's VmHWM.",
        "",
        "| toolkit | target tokens/s | % peak | peak RSS MiB | parameters | BLEU | chrF | exact | PER | decode s "
        "| notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        ratio,
        "",
        "JoeyNMT appends EOS to every source sentence, so its encoder and attention do more than the FLOPs "
        f"counted here (+{source_eos:.1%} per target token on this data). Parameters: the two layouts differ by "
        "three bias vectors only (rnnkit: key projection and output layer; JoeyNMT: attentional layer), see "
        "benchmarks/peers/model.py. JoeyNMT patches (installed copy, "
        f"idempotent): {'; '.join(f'{p.why} [{d}]' for p, d in zip(PATCHES, patches, strict=False)) or 'not run'}.",
        "",
    ]
    write_results("\n".join(lines), output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
