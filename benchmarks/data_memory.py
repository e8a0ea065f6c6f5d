"""Memory of translation training at scale: peak RSS for a million sentence pairs at batch 64 (issue 21, item 3).

A synthetic parallel corpus of ``--pairs`` pairs (default 1,000,000) is written as a TSV file: two made-up
languages of 30,000 pseudo-words each, drawn with Zipf frequencies, 3 to 30 words a sentence, the target a
word-by-word mapping of the source with neighbouring words swapped. Both contenders then train the same model
for ``--steps`` optimiser steps at batch 64 (no evaluation), with the same :class:`rnnkit.training.Trainer` and
:class:`rnnkit.tasks.translate.TranslateTask`; only how the tokenized pairs are held differs:

* memory-mapped (rnnkit): ``rnnkit.tasks.translate.prepare`` as shipped: the file streamed, a BPE tokenizer
  of 8,000 per side built once, token ids written to the run directory and read back through a memory map
  (:mod:`rnnkit.data.tokenized`);
* Python lists (the reference, how rnnkit held them before): ``read_parallel`` reads the whole file, the same
  tokenizers are trained on lists of the texts, and every pair's ids and texts are kept as Python lists.

The memory-mapped path also runs on a corpus 50 times smaller: its peak should not move with the corpus size.

The model is the one of issue 21 (GRU, embeddings 256, bidirectional encoder 2 x 256, Bahdanau decoder 512,
additive attention, BPE 8k per side). Each contender runs in a fresh process, which reports the high-water mark
of its resident set (VmHWM, :func:`benchmarks.harness.peak_rss_bytes`), its RSS once the data is ready, and the
seconds it took to prepare the data; both contenders' figures come from the same run on the same file.

Usage: ``python -m benchmarks.data_memory [--pairs N] [--steps K] [--workdir DIR] [--quick] [--output PATH]``
(``--quick``: 20,000 pairs, 5 steps). Writes benchmarks/results/data_memory.md (``--quick``: data_memory.quick.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.harness import ROOT, load_average, machine, peak_rss_bytes, rss_bytes, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "data_memory.md"
GOAL_MIB = 2048
BATCH_SIZE = 64
VALID_PAIRS = 1000
MODEL = {"cell": "gru", "embedding_size": 256, "hidden_size": 512, "decoder": "bahdanau", "attention": "additive",
         "level": "bpe", "bpe_vocab_size": 8000}
CONTENDERS = {"mmap": "memory-mapped token ids (rnnkit)", "lists": "Python lists of ids (reference: before)"}


# -- the corpus ------------------------------------------------------------------------------------------------


def _pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, size=count)
    words = {"".join(rng.choice(letters, size=n)) for n in lengths}
    while len(words) < count:  # a few collide; draw more
        words.add("".join(rng.choice(letters, size=int(rng.integers(4, 10)))))
    return sorted(words)[:count]


def write_corpus(path: Path, pairs: int, seed: int = 0, vocabulary: int = 30_000) -> None:
    """``pairs`` lines of ``source<TAB>target`` (see the module docstring), written in chunks."""
    rng = np.random.default_rng(seed)
    source_words = np.array(_pseudo_words(rng, vocabulary), dtype=object)
    target_words = np.array(_pseudo_words(rng, vocabulary), dtype=object)
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, pairs, 50_000):
            count = min(50_000, pairs - start)
            lengths = rng.integers(3, 31, size=count)
            ids = (rng.zipf(1.3, size=int(lengths.sum())) - 1) % vocabulary
            lines = []
            for sentence in np.split(ids, np.cumsum(lengths)[:-1]):
                swapped = sentence.copy()
                swapped[1::2], swapped[:-1:2] = sentence[:-1:2], sentence[1::2]  # swap neighbours pairwise
                lines.append(" ".join(source_words[sentence]) + "\t" + " ".join(target_words[swapped]) + "\n")
            handle.write("".join(lines))


# -- one contender, in its own process ----------------------------------------------------------------------------


class ListPairs:
    """The reference: tokenized pairs held as Python lists, as rnnkit's translate task held them before."""

    def __init__(self, records, source_tokenizer, target_tokenizer) -> None:
        self.sources = [source_tokenizer.encode(r.source) or [source_tokenizer.unk_id] for r in records]
        self.targets = [target_tokenizer.encode(r.target, add_bos=True, add_eos=True) for r in records]
        self.source_text = [r.source for r in records]
        self.target_text = [r.target for r in records]

    def __len__(self) -> int:
        return len(self.sources)

    def lengths(self) -> np.ndarray:
        return np.array([len(s) + len(t) for s, t in zip(self.sources, self.targets, strict=True)])


def probe(contender: str, train: Path, valid: Path, run_dir: Path, steps: int) -> dict:
    import torch

    from rnnkit.data import build_tokenizer, read_parallel
    from rnnkit.distributed import make_trainer
    from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig
    from rnnkit.tasks import resolve_settings, training_settings, translate

    torch.set_num_threads(2)
    settings = resolve_settings("translate", {
        **MODEL, "data": str(train), "valid": str(valid), "batch_size": BATCH_SIZE, "max_steps": steps,
        "eval_examples": 100, "progress": False, "seed": 0})
    start = time.perf_counter()
    if contender == "mmap":
        task, run_config = translate.prepare(settings, run_dir)
    else:
        records = list(read_parallel(train))
        source_tokenizer = build_tokenizer("bpe", [r.source for r in records], MODEL["bpe_vocab_size"])
        target_tokenizer = build_tokenizer("bpe", [r.target for r in records], MODEL["bpe_vocab_size"])
        train_pairs = ListPairs(records, source_tokenizer, target_tokenizer)
        del records
        valid_pairs = ListPairs(list(read_parallel(valid)), source_tokenizer, target_tokenizer)
        torch.manual_seed(0)
        model = Seq2Seq.build(Seq2SeqConfig(
            source_vocab_size=len(source_tokenizer), target_vocab_size=len(target_tokenizer),
            embedding_size=MODEL["embedding_size"], hidden_size=MODEL["hidden_size"], cell=MODEL["cell"],
            decoder=MODEL["decoder"], attention=MODEL["attention"]))
        task = translate.TranslateTask(model, source_tokenizer, target_tokenizer, train_pairs, valid_pairs, settings)
        run_config = {"task": "translate", "model": model.config_dict(), "settings": {}}
    prepared = time.perf_counter() - start
    ready, ready_peak = rss_bytes(), peak_rss_bytes()
    target_lengths = task.train.targets.lengths() if contender == "mmap" else np.array([len(t) for t in
                                                                                       task.train.targets])
    parameters = sum(p.numel() for p in task.model.parameters())
    start = time.perf_counter()
    make_trainer(task, run_dir, training_settings(settings), run_config=run_config).train(overwrite=True)
    return {"contender": contender, "pairs": len(task.train), "parameters": parameters,
            "prepare_seconds": prepared, "train_seconds": time.perf_counter() - start,
            "ready_mib": ready / 2**20, "ready_peak_mib": ready_peak / 2**20, "peak_mib": peak_rss_bytes() / 2**20,
            "target_tokens_mean": float(target_lengths.mean()), "target_tokens_max": int(target_lengths.max())}


def run_probe(contender: str, train: Path, valid: Path, workdir: Path, steps: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.data_memory", "--probe", contender, "--train", str(train),
               "--valid", str(valid), "--workdir", str(workdir), "--steps", str(steps)]
    print(f"running {CONTENDERS[contender]} on {train.name} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {contender} probe failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the results -------------------------------------------------------------------------------------------------


def report(results: list[dict], pairs: int, steps: int, corpus_mib: float, load_before: str, load_after: str,
           command: str) -> str:
    import torch

    first = results[0]
    lines = [
        "# Memory of translation training at scale",
        "",
        f"`{command}`: torch {torch.__version__}, {machine()}, 2 threads. {pairs:,} synthetic sentence pairs "
        f"({corpus_mib:,.0f} MiB of TSV), {steps} training steps at batch {BATCH_SIZE}, model of issue 21 "
        f"({first['parameters'] / 1e6:.1f}M parameters: GRU, embeddings 256, bidirectional encoder 2 x 256, "
        f"Bahdanau decoder 512, BPE 8k per side). Each contender in a fresh process, one after the other. Load "
        f"average (1, 5, 15 min) before: {load_before}; after: {load_after}.",
        "",
        f"Targets average {first['target_tokens_mean']:.1f} BPE tokens (longest "
        f"{first['target_tokens_max']}, <bos> and <eos> included). `peak, preparing` is the high-water mark when "
        "the data is ready (reading, tokenizer training, encoding), `RSS ready` the resident set then; `peak, whole "
        "run` includes the training steps.",
        "",
        f"| data held as, corpus | peak, whole run | peak, preparing | RSS ready | preparing the data | "
        f"{steps} steps |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(f"| {CONTENDERS[result['contender']]}, {result['pairs']:,} pairs | "
                     f"{result['peak_mib']:,.0f} MiB | {result['ready_peak_mib']:,.0f} MiB | "
                     f"{result['ready_mib']:,.0f} MiB | "
                     f"{result['prepare_seconds']:,.0f} s | {result['train_seconds']:,.0f} s |")
    by_name = {r["contender"]: r for r in results[:-1]}
    mmap, small = by_name["mmap"], results[-1]
    lines += ["", "## Goal (issue 21, item 3) measured by this run", "",
              "| goal | measured | met |", "|---|---|---|",
              f"| peak RSS under 2 GB for {pairs:,} pairs at batch {BATCH_SIZE} | {mmap['peak_mib']:,.0f} MiB"
              + (f" ({by_name['lists']['peak_mib'] / mmap['peak_mib']:.1f}x less than Python lists)"
                 if "lists" in by_name else "")
              + f"; {mmap['peak_mib'] - small['peak_mib']:+,.0f} MiB against {small['pairs']:,} pairs"
              + f" | {'yes' if mmap['peak_mib'] < GOAL_MIB and pairs >= 1_000_000 else 'no'} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=None, help="sentence pairs (default 1,000,000)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 30)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the corpus and runs go (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="20,000 pairs, 5 steps")
    parser.add_argument("--skip-reference", action="store_true", help="measure the memory-mapped path only")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--probe", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--valid", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pairs = args.pairs or (20_000 if args.quick else 1_000_000)
    steps = args.steps or (5 if args.quick else 30)
    if pairs < 1 or steps < 1:
        parser.error(f"--pairs and --steps must be at least 1, got {pairs} and {steps}")
    if args.probe:
        run_dir = args.workdir / f"run-{args.probe}-{args.train.stem}"
        print(json.dumps(probe(args.probe, args.train, args.valid, run_dir, steps)))
        return 0
    output = args.output or (RESULTS.with_suffix(".quick.md") if args.quick else RESULTS)
    with tempfile.TemporaryDirectory(prefix="rnnkit-data-memory-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        train, small, valid = workdir / "train.tsv", workdir / "train-small.tsv", workdir / "valid.tsv"
        print(f"writing {pairs:,} synthetic pairs to {train} ...", file=sys.stderr, flush=True)
        write_corpus(train, pairs, seed=0)
        write_corpus(small, max(1, pairs // 50), seed=0)
        write_corpus(valid, VALID_PAIRS, seed=1)
        load_before = load_average()
        probes = [("mmap", train)] + ([] if args.skip_reference else [("lists", train)]) + [("mmap", small)]
        results = [run_probe(c, path, valid, workdir, steps) for c, path in probes]
        command = "python -m benchmarks.data_memory" + (" --quick" if args.quick else "") + (
            f" --pairs {pairs}" if args.pairs else "") + (f" --steps {steps}" if args.steps else "")
        text = report(results, pairs, steps, train.stat().st_size / 2**20, load_before, load_average(), command)
    write_results(text, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
