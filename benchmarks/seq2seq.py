"""Speed of the encoder-decoder models: the teacher-forced Luong fast path against the per-step loop, and
batched beam search.

Training throughput in target tokens per second (forward, the translate task's cross-entropy, backward, Adam
step) for the same model, two ways (interleaved round by round, see benchmarks/harness.py):

* fast path: under full teacher forcing the decoder RNN runs over all T target steps in one call and the
  attention of all steps is a batched matrix product (``Seq2Seq.forward(..., fast_path=True)``);
* step loop: one ``decoder.step`` per target position (``fast_path=False``), what scheduled sampling, input
  feeding and Bahdanau-style attention need.

A third contender runs only what both share, the encoder forward and backward and the Adam step. Each
training row shows its fraction of the sgemm peak (measured in the same run): the step's matrix-product FLOPs
(:func:`training_flops`) over its time. Together they bound the fast path's ratio: the step loop's time over
the shared part's plus the decoder's FLOPs at the peak (a decoder whose products ran at the sgemm peak, with
nothing else to do).

Two models: a larger one (bidirectional LSTM encoder, Luong decoder with general attention, hidden 256,
vocabulary 1000, B = 64, S = T = 30) and the demo's (``rnnkit demo``: character-level GRU encoder-decoder,
Luong general attention, embedding 32, hidden 128; B = 64, sources of 10-40 characters as the dates data,
targets of 11 = an ISO date and EOS).

Decoding throughput in sentences per second: beam sizes 1 and 5 on a batch of 64 sources with the demo's
model. Untrained weights rarely emit EOS, so every hypothesis runs to ``max_len`` = 11 (the length of the
demo's outputs): the figure is the cost of decoding dates, not of early stopping. ``--demo-run DIR`` times a
trained demo run directory instead, on its test sources, with the translate task's ``max_len``.

Usage: ``python -m benchmarks.seq2seq [--quick] [--repeats N] [--threads N] [--demo-run DIR] [--output PATH]``
or ``rnnkit bench seq2seq``. Writes benchmarks/results/seq2seq.md (``--quick``: seq2seq.quick.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from benchmarks.harness import (
    Contender,
    Peak,
    Summary,
    begin,
    load_average,
    machine,
    rate,
    rounds,
    run_rounds,
    set_threads,
    write_results,
)
from rnnkit.seq2seq import BOS_ID, PAD_ID, Seq2Seq, Seq2SeqConfig

RESULTS = Path(__file__).resolve().parent / "results" / "seq2seq.md"
LARGE = dict(name="BiLSTM + Luong, hidden 256, vocab 1000", cell="lstm", batch=64, source_length=30,
             min_source_length=15, target_length=30, vocab=1000, embedding=128, hidden=256)
DEMO = dict(name="demo model: char GRU + Luong, hidden 128", cell="gru", batch=64, source_length=40,
            min_source_length=10, target_length=11, vocab=80, embedding=32, hidden=128)
QUICK = dict(name="tiny (smoke test)", cell="lstm", batch=8, source_length=12, min_source_length=6,
             target_length=8, vocab=50, embedding=16, hidden=32)


def _data(batch: int, source_length: int, min_source_length: int, target_length: int, vocab: int, **_):
    """Random token ids with source lengths spread over [min, S] (the first sentence has the full S)."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(min_source_length, source_length + 1, (batch,), generator=generator)
    lengths[0] = source_length
    src = torch.randint(4, vocab, (batch, source_length), generator=generator)
    src = src.masked_fill(torch.arange(source_length) >= lengths.unsqueeze(1), PAD_ID)
    tgt_in = torch.randint(4, vocab, (batch, target_length), generator=generator)
    tgt_in[:, 0] = BOS_ID
    tgt_out = torch.randint(4, vocab, (batch, target_length), generator=generator)
    return src, lengths, tgt_in, tgt_out


def _model(cell: str, vocab: int, embedding: int, hidden: int, **_) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq.build(Seq2SeqConfig(vocab, vocab, embedding_size=embedding, hidden_size=hidden, cell=cell,
                                       decoder="luong", attention="general"))


def training_flops(model: Seq2Seq, src_lengths: torch.Tensor, target_length: int) -> tuple[float, float]:
    """FLOPs of the matrix products of one training step of a Luong model, the encoder's and the decoder's:
    3 times the forward's (each product's backward computes dL/dx and dL/dW, or both operands' gradients,
    with as many again each).

    Forward: 2 * rows * numel(W) for every weight matrix (not the embeddings: they are lookups), where rows
    is what it meets: the real source tokens (sum of ``src_lengths``) for the encoder's RNN, one row per
    sentence for its bridge to the decoder's state, B * T target positions for the decoder's RNN, attention,
    combination and output layers; and the attention's two batched products, scores and contexts, each
    2 * B * T * S * K (the decoder's). ``tests/test_benchmarks.py`` checks the sum against
    torch.utils.flop_counter."""
    batch, source_length = len(src_lengths), int(src_lengths.max())
    # a parameter's rows: those of the first prefix its name starts with
    rows = {"encoder.rnn.": int(src_lengths.sum()), "encoder.": batch, "decoder.": batch * target_length}
    forward = {"encoder": 0.0, "decoder": 4.0 * batch * target_length * source_length * model.encoder.output_size}
    for name, parameter in model.named_parameters():
        if parameter.dim() == 2 and not name.endswith("embedding.weight"):
            count = next(n for prefix, n in rows.items() if name.startswith(prefix))
            forward[name.split(".")[0]] += 2.0 * parameter.numel() * count
    return 3 * forward["encoder"], 3 * forward["decoder"]


def training_contenders(sizes: dict) -> tuple[list[Contender], int, tuple[float, float]]:
    """The step loop, the fast path and the part of a training step both share (encoder, Adam); the number of
    target tokens of a step and its FLOPs (the encoder's, the decoder's)."""
    src, lengths, tgt_in, tgt_out = _data(**sizes)
    model = _model(**sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(fast_path: bool):
        def run(backward: bool) -> None:  # always a full training step; ``backward`` is the harness's mode
            logits = model(src, lengths, tgt_in, fast_path=fast_path)  # (B, T, V)
            # the loss of rnnkit.tasks.translate
            loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return run

    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        initial = model.start(src, lengths)
        readouts = {key: torch.randn(value.shape, generator=generator) for key, value in initial.items()
                    if isinstance(value, torch.Tensor) and value.is_floating_point()}
    decoder_parameters = list(model.decoder.parameters())

    def shared(backward: bool) -> None:
        """The encoder forward and backward (from a fixed random readout of the decoder's initial state) and
        the Adam step over all parameters (the decoder's gradients 0): what a decoder that cost nothing would
        leave of a training step."""
        state = model.start(src, lengths)
        loss = sum((state[key] * weights).sum() for key, weights in readouts.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for parameter in decoder_parameters:
            parameter.grad = torch.zeros_like(parameter)
        optimizer.step()

    return ([Contender("training, step loop", train_step(False)),
             Contender("training, fast path (one RNN call)", train_step(True)),
             Contender("shared part only (encoder, Adam)", shared)],
            tgt_in.numel(), training_flops(model, lengths, tgt_in.shape[1]))


def beam_contenders(sizes: dict, demo_run: Path | None) -> tuple[list[Contender], int, str]:
    from rnnkit.decoding import beam_search

    if demo_run is not None:
        from rnnkit.tasks import translate as translate_task

        runner = translate_task.load(demo_run)
        model = runner.model.eval()
        from rnnkit.data import load_source

        records = list(load_source(runner.settings.get("data", "dates"), "translate", "test"))[: sizes["batch"]]
        sources = runner.encode([r.source for r in records])
        lengths = torch.tensor([len(s) for s in sources])
        src = torch.full((len(sources), int(lengths.max())), PAD_ID)
        for row, tokens in enumerate(sources):
            src[row, : len(tokens)] = torch.as_tensor(tokens)
        max_len = int(2 * lengths.max()) + 10  # rnnkit.tasks.translate.decode_texts
        where = f"trained run {demo_run}, its first {len(sources)} test sources, max_len {max_len}"
    else:
        model = _model(**sizes).eval()
        src, lengths, _, _ = _data(**sizes)
        max_len = sizes["target_length"]
        where = f"untrained weights, max_len {max_len} (every hypothesis runs to it)"
    contenders = []
    for beam_size in (1, 5):

        def search(backward: bool, beam_size: int = beam_size) -> None:
            with torch.no_grad():
                beam_search(model, model.start(src, lengths), bos_id=model.bos_id, eos_id=model.eos_id,
                            pad_id=model.pad_id, beam_size=beam_size, max_len=max_len)

        contenders.append(Contender(f"beam search, beam {beam_size}, batch {len(src)}", search))
    return contenders, len(src), where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rnnkit bench seq2seq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 rounds (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 5; 2 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--demo-run", type=Path, default=None, help="a trained `rnnkit demo` run directory")
    parser.add_argument("--output", type=Path, default=None, help=f"markdown file (default {RESULTS})")
    args = parser.parse_args(argv)
    repeats = rounds(parser, args.repeats, args.quick)
    set_threads(parser, args.threads)
    output, min_seconds, load_before = begin(args.output, RESULTS, args.quick, repeats, seconds=0.5)
    peak = Peak(min_seconds)
    lines_training, lines_beam, ratios = [], [], []
    for sizes in [QUICK] if args.quick else [LARGE, DEMO]:
        contenders, tokens, (encoder_flops, decoder_flops) = training_contenders(sizes)
        flops = encoder_flops + decoder_flops
        run_rounds(contenders, repeats, min_seconds, peak, modes=(True,))
        loop, fast, shared = contenders
        for contender in contenders:
            summary = Summary.of(contender.seconds[True], loop.seconds[True], tokens)
            share = (f"{flops * summary.median / tokens / peak.best:.0%}" if contender is not shared else "")
            lines_training.append(f"| {sizes['name']} | {contender.label} | {rate(summary.median)} "
                                  f"({rate(summary.low)}-{rate(summary.high)}) | {summary.ratio:.2f} | {share} |")
        # the most the fast path could gain: were the decoder's products at the sgemm peak and the rest free
        floor = statistics.median(shared.seconds[True]) + decoder_flops / peak.best
        ratios.append((sizes["name"], Summary.of(fast.seconds[True], loop.seconds[True], tokens).ratio,
                       statistics.median(loop.seconds[True]) / floor, decoder_flops))
    beam_sizes = QUICK if args.quick else DEMO
    contenders, sentences, where = beam_contenders(beam_sizes, args.demo_run)
    run_rounds(contenders, repeats, min_seconds, peak, modes=(False,))
    beam5 = None
    for contender in contenders:
        summary = Summary.of(contender.seconds[False], contenders[0].seconds[False], sentences)
        lines_beam.append(f"| {contender.label} | {rate(summary.median)} ({rate(summary.low)}-{rate(summary.high)}) |")
        beam5 = summary.median
    command = " ".join(["python -m benchmarks.seq2seq", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Seq2seq speed",
        "",
        f"`{command}`: torch {torch.__version__}, {machine()}, "
        f"{torch.get_num_threads()} thread(s). {repeats} rounds (each timing >= {min_seconds} s of calls), "
        f"the contenders interleaved. Load average (1, 5, 15 min) before: {load_before}; after: {load_average()}.",
        "",
        "Training: target tokens/s of a full step (forward, cross-entropy, backward, Adam), median (min-max) over "
        "rounds; `x loop` is the paired ratio to the step loop; `% peak`: the step's matrix-product FLOPs "
        "(`training_flops`: 3x the forward's, real source tokens only) over the time, as a fraction of the "
        f"sgemm peak measured in the same run, {peak.best / 1e9:.0f} GFLOP/s (median {peak.median / 1e9:.0f}). "
        "The shared part (the encoder forward and backward, the Adam step) is what both paths run alike: "
        "`x loop` can be at most the step loop's time over the shared part's plus the decoder's FLOPs at the "
        "sgemm peak (a decoder whose products ran at the peak, with nothing else to do).",
        "",
        "| model | path | target tokens/s | x loop | % peak |",
        "|---|---|---:|---:|---:|",
        *lines_training,
        "",
        f"Beam search ({beam_sizes['name']}; {where}): sentences/s, median (min-max).",
        "",
        "| search | sentences/s |",
        "|---|---:|",
        *lines_beam,
        "",
        "## Goals (issue 7) measured by this run",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *[f"| teacher-forced Luong training >= 3x the per-step loop ({name}) | {ratio:.2f}x; at most {bound:.2f}x "
          f"on this machine (the step loop's time over the shared part's plus the decoder's {flops / 1e9:.1f} "
          f"GFLOP at the sgemm peak) | {'yes' if ratio >= 3 else 'no'} |" for name, ratio, bound, flops in ratios],
        f"| beam 5 on a batch of 64 >= 100 sentences/s (demo model) | {beam5:.0f} sentences/s | "
        f"{'yes' if beam5 >= 100 else 'no'} |",
        "",
    ]
    text = "\n".join(lines)
    write_results(text, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
