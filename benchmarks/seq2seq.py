"""Speed of the encoder-decoder model: the teacher-forced Luong fast path against the per-step loop.

Training throughput in target tokens per second (forward, cross-entropy, backward, Adam step), medians of
several repeats, for the same model (bidirectional LSTM encoder, Luong decoder with general attention):

* fast path: under full teacher forcing the decoder RNN runs over all T target steps in one call and the
  attention of all steps is a batched matrix product (``Seq2Seq.forward(..., fast_path=True)``);
* step loop: one ``decoder.step`` per target position (``fast_path=False``), what scheduled sampling, input
  feeding and Bahdanau-style attention need.

The two run round-robin (interleaved) within each repeat, so that changes in machine load hit them alike.
If ``rnnkit.decoding.beam_search`` is available, decoding throughput in sentences per second is measured too:
beam sizes 1 and 5 on a batch of 64 sources, ``max_len`` = source length + 1 (the model is untrained, so
most hypotheses run to ``max_len``: the figure is close to the worst case).

Usage: ``python -m benchmarks.seq2seq [--quick] [--repeats N] [--threads N] [--output PATH]``.
Writes a markdown table to benchmarks/results/seq2seq.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from rnnkit.seq2seq import BOS_ID, PAD_ID, Seq2Seq, Seq2SeqConfig

RESULTS = Path(__file__).resolve().parent / "results" / "seq2seq.md"
FULL = dict(batch=64, source_length=30, target_length=30, vocab=1000, embedding=128, hidden=256)
QUICK = dict(batch=16, source_length=12, target_length=12, vocab=100, embedding=16, hidden=32)


def _data(batch: int, source_length: int, target_length: int, vocab: int, **_):
    """Random token ids with source lengths spread over [S/2, S] (the first sentence has the full S)."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(source_length // 2, source_length + 1, (batch,), generator=generator)
    lengths[0] = source_length
    src = torch.randint(4, vocab, (batch, source_length), generator=generator)
    src = src.masked_fill(torch.arange(source_length) >= lengths.unsqueeze(1), PAD_ID)
    tgt_in = torch.randint(4, vocab, (batch, target_length), generator=generator)
    tgt_in[:, 0] = BOS_ID
    tgt_out = torch.randint(4, vocab, (batch, target_length), generator=generator)
    return src, lengths, tgt_in, tgt_out


def _model(vocab: int, embedding: int, hidden: int, **_) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq.build(
        Seq2SeqConfig(vocab, vocab, embedding_size=embedding, hidden_size=hidden, decoder="luong")
    )


def _time(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(sizes: dict, repeats: int, log=print) -> list[tuple[str, float, str]]:
    """Rows (name, median throughput, unit)."""
    src, lengths, tgt_in, tgt_out = _data(**sizes)
    model = _model(**sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(fast_path: bool) -> Callable[[], None]:
        def run() -> None:
            logits = model(src, lengths, tgt_in, fast_path=fast_path)  # (B, T, V)
            loss = F.cross_entropy(logits.transpose(1, 2), tgt_out)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return run

    contenders = {
        "training, fast path (one RNN call)": train_step(True),
        "training, step loop": train_step(False),
    }
    tokens = tgt_in.numel()
    for run in contenders.values():  # warm up
        run()
    seconds = {name: [] for name in contenders}
    for repeat in range(repeats):
        for name, run in contenders.items():  # round-robin
            seconds[name].append(_time(run))
        log(
            f"  repeat {repeat + 1}/{repeats}: "
            + ", ".join(f"{s[-1] * 1e3:.0f} ms" for s in seconds.values())
        )
    rows = [(name, tokens / statistics.median(times), "target tokens/s") for name, times in seconds.items()]

    try:
        from rnnkit.decoding import beam_search
    except ImportError:  # decoding not available in this checkout
        return rows
    model.eval()
    beam_src, beam_lengths = src[:64], lengths[:64]
    max_len = beam_src.shape[1] + 1
    searches = {}
    for beam_size in (1, 5):

        def search(beam_size: int = beam_size) -> None:
            with torch.no_grad():
                beam_search(model, model.start(beam_src, beam_lengths), beam_size=beam_size, max_len=max_len)

        searches[f"beam search, beam {beam_size}, batch {len(beam_src)}"] = search
    for run in searches.values():
        run()
    seconds = {name: [] for name in searches}
    for _ in range(repeats):
        for name, run in searches.items():
            seconds[name].append(_time(run))
    rows += [
        (name, len(beam_src) / statistics.median(times), "sentences/s") for name, times in seconds.items()
    ]
    return rows


def table(rows: list[tuple[str, float, str]], sizes: dict, repeats: int, load: str) -> str:
    fast, loop = rows[0][1], rows[1][1]
    lines = [
        "# Seq2seq speed",
        "",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), load average {load}; medians of {repeats} repeats.",
        "",
        f"Model: bidirectional LSTM encoder + Luong decoder (general attention), hidden {sizes['hidden']}, "
        f"embedding {sizes['embedding']}, vocabulary {sizes['vocab']}. Batch {sizes['batch']}, source length "
        f"{sizes['source_length']} (spread over [S/2, S]), target length {sizes['target_length']}.",
        "",
        "| measure | throughput | unit |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {value:,.0f} | {unit} |" for name, value, unit in rows]
    lines += ["", f"Fast path / step loop: {fast / loop:.2f}x.", ""]
    return "\n".join(lines)


def _load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not available on this platform
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seq2seq", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; 2 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown file (default {RESULTS})")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    load = _load_average()
    print(f"benchmarking with {torch.get_num_threads()} thread(s), {repeats} repeats; load average {load}")
    rows = measure(sizes, repeats)
    text = table(rows, sizes, repeats, load)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
