"""Where one rnnkit training step of the JoeyNMT-comparison model spends its time, and what would cut it.

The model of benchmarks/peers/joeynmt.py (GRU, additive attention, input feeding; E 256, encoder 2 x 256,
decoder 512, vocabularies 8k) built through rnnkit's public API as ``rnnkit train translate`` builds it, one
batch of 64 pairs, for two shapes: the CMUdict-BPE batches of the comparison (short: S = 3 source and T = 4
target tokens) and sentence-like batches (S = T = 16). Each part is timed on its own, forward and backward
with the same shapes, median over rounds:

* encoder recurrence: the bidirectional GRU over the embedded source (``model.encoder.rnn``);
* the rest of the encoder: embedding, bridge, the attention's key projection;
* decoder recurrence: T single steps of the decoder GRU (``model.decoder.rnn``), as the step loop runs them;
* attention: T steps of additive attention (scores, softmax, context);
* attentional layer, output layer and the loss: T steps of h~ = tanh(W_c [c; s]) and W_o h~ (per step, as
  the loop runs them), the cross-entropy over all steps;
* optimizer: gradient clipping and Adam (torch's default single-tensor loop, as rnnkit.training builds it);

then the whole step (rnnkit's forward, the translate task's cross-entropy, backward, clipping, Adam), whose
remainder over the parts is the glue (concatenations, state dicts, Python). The step's fraction of the sgemm
peak uses the analytic FLOPs of benchmarks/peers/model.py. Levers are measured where they can be timed alone (Adam's
fused kernel; the output layer run once over all T steps instead of per step; that product and its loss fused
chunk by chunk, as ``Seq2Seq.teacher_forced_loss`` now trains) and estimated
from the parts otherwise (both encoder directions at once; the decoder's GRU steps fused, bounded by their
products at the sgemm peak; Adam on the embedding rows a batch uses). A torch.profiler table of the step's
top operators closes the file.

Usage: ``python -m benchmarks.peers.step_profile [--repeats N] [--output PATH]``. Writes
benchmarks/results/step_profile.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import torch
import torch.nn.functional as F

from benchmarks.harness import ROOT, Peak, load_average, machine, write_results
from benchmarks.peers.model import Counts, Dims, forward_macs, training_flops
from rnnkit.losses import linear_cross_entropy
from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig

RESULTS = ROOT / "benchmarks" / "results" / "step_profile.md"
SHAPES = {"CMUdict BPE (S 3, T 4)": (3, 4), "sentence-like (S 16, T 16)": (16, 16)}
BATCH = 64
DIMS = Dims(8000, 8000)


def build() -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq.build(Seq2SeqConfig(DIMS.source_vocab, DIMS.target_vocab, embedding_size=DIMS.embedding,
                                       hidden_size=DIMS.decoder_hidden, cell="gru", decoder="luong",
                                       attention="additive", input_feeding=True))


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def parts(model: Seq2Seq, source_length: int, target_length: int) -> dict[str, Callable[[], None]]:
    """One callable per part of the step, each a forward and backward at the step's shapes."""
    generator = torch.Generator().manual_seed(0)
    b, s, t = BATCH, source_length, target_length
    e, h, k, v = DIMS.embedding, DIMS.decoder_hidden, DIMS.keys, DIMS.target_vocab
    src = torch.randint(4, v, (b, s), generator=generator)
    lengths = torch.full((b,), s)
    tgt_in = torch.randint(4, v, (b, t), generator=generator)
    tgt_out = torch.randint(4, v, (b, t), generator=generator)
    decoder, encoder = model.decoder, model.encoder
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fused = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator).requires_grad_()

    def encoder_recurrence():
        outputs, final = encoder.rnn(leaf(b, s, e), lengths=lengths)
        (outputs.sum() + final.sum()).backward()

    def encoder_rest():
        embedded = encoder.embedding(src)  # (B, S, E)
        bridged = torch.tanh(encoder.bridge(leaf(b, k)))  # (B, H)
        keys = decoder.attention.precompute(leaf(b, s, k))  # (B, S, A)
        (embedded.sum() + bridged.sum() + keys.sum()).backward()

    def decoder_recurrence():
        state = leaf(1, b, h)
        total = 0
        for _ in range(t):
            _, state = decoder.rnn(leaf(b, 1, e + h), state)
            total = total + state.sum()
        total.backward()

    keys, projected, valid = leaf(b, s, k), leaf(b, s, k), torch.ones(b, s, dtype=torch.bool)

    def attention():
        total = 0
        for _ in range(t):
            context, _ = decoder.attention(leaf(b, h), keys, valid, precomputed=projected)
            total = total + context.sum()
        total.backward()

    def output_per_step():
        logits = [decoder.output(torch.tanh(decoder.combine(leaf(b, k + h)))) for _ in range(t)]  # T x (B, V)
        F.cross_entropy(torch.stack(logits, 1).flatten(0, 1), tgt_out.flatten()).backward()

    def output_once():
        logits = decoder.output(torch.tanh(decoder.combine(leaf(b, t, k + h))))  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten()).backward()

    def output_fused():  # the same, the output layer and its loss as one chunked operation
        features = torch.tanh(decoder.combine(leaf(b, t, k + h))).flatten(0, 1)  # (B T, H)
        linear_cross_entropy(features, decoder.output.weight, decoder.output.bias, tgt_out.flatten()).backward()

    def fill_gradients():
        for parameter in model.parameters():
            parameter.grad = torch.randn_like(parameter)

    def step_with(adam: torch.optim.Optimizer):
        def run():
            logits = model(src, lengths, tgt_in)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=model.pad_id)
            adam.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            adam.step()

        return run

    def optimizer_step(adam: torch.optim.Optimizer):
        def run():
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            adam.step()

        return run

    fill_gradients()
    return {"encoder recurrence": encoder_recurrence, "encoder: embedding, bridge, key projection": encoder_rest,
            "decoder recurrence (T GRU steps)": decoder_recurrence, "attention (T steps)": attention,
            "attentional + output layer + loss (per step)": output_per_step,
            "optimizer (clip + Adam)": optimizer_step(optimizer),
            "whole step": step_with(optimizer),
            # levers
            "output layer + loss once over all T steps": output_once,
            "output layer + loss fused (rnnkit.losses)": output_fused,
            "optimizer with Adam(fused=True)": optimizer_step(fused)}


PART_NAMES = ["encoder recurrence", "encoder: embedding, bridge, key projection", "decoder recurrence (T GRU steps)",
              "attention (T steps)", "attentional + output layer + loss (per step)", "optimizer (clip + Adam)"]


def profile_table(model: Seq2Seq, source_length: int, target_length: int) -> str:
    """torch.profiler's top operators (self CPU time) over three whole steps."""
    from torch.profiler import ProfilerActivity, profile

    step = parts(model, source_length, target_length)["whole step"]
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.step_profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timings per part (median)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    load_before = load_average()
    peak = Peak(0.5)
    for _ in range(3):
        peak.measure()
    model = build()
    embeddings = (DIMS.source_vocab + DIMS.target_vocab) * DIMS.embedding
    embedding_share = embeddings / sum(p.numel() for p in model.parameters())
    tables, levers, profiles = [], [], []
    for label, (source_length, target_length) in SHAPES.items():
        seconds = {name: median_seconds(run, args.repeats)
                   for name, run in parts(model, source_length, target_length).items()}
        whole = seconds["whole step"]
        counts = Counts.of([(source_length, target_length)] * BATCH)
        flops = training_flops(DIMS, counts)
        rows = [f"| {name} | {seconds[name] * 1e3:.1f} | {seconds[name] / whole:.0%} |" for name in PART_NAMES]
        rest = whole - sum(seconds[name] for name in PART_NAMES)
        rows.append(f"| remainder (glue: concatenations, state dicts, Python) | {rest * 1e3:.1f} | "
                    f"{rest / whole:.0%} |")
        tables += [f"### {label}", "",
                   f"Whole step {whole * 1e3:.1f} ms = {BATCH * target_length / whole:,.0f} target tokens/s; "
                   f"{flops / 1e9:.2f} GFLOP of matrix products (analytic) = **{flops / whole / peak.best:.0%} of "
                   f"the sgemm peak**.", "",
                   "| part (forward + backward) | ms | share of the step |", "|---|---:|---:|", *rows, ""]
        saved = {
            "Adam(fused=True) instead of the default single-tensor loop":
                seconds["optimizer (clip + Adam)"] - seconds["optimizer with Adam(fused=True)"],
            "output layer and loss once over all T steps after the loop (h~_t is all the loop needs)":
                seconds["attentional + output layer + loss (per step)"]
                - seconds["output layer + loss once over all T steps"],
            "output layer and loss as one chunked operation (rnnkit.losses.linear_cross_entropy): no (B, T, V) "
            "logits":
                seconds["output layer + loss once over all T steps"]
                - seconds["output layer + loss fused (rnnkit.losses)"],
            "both encoder directions at once on the two cores (~1.6x on the recurrence, measured earlier)":
                seconds["encoder recurrence"] * (1 - 1 / 1.6),
            # a bound: the decoder GRU's products at the sgemm peak, nothing else (one fused kernel per step)
            "decoder GRU steps as one fused kernel each (bound: products at the sgemm peak)":
                seconds["decoder recurrence (T GRU steps)"] - 6 * forward_macs(DIMS, counts)["decoder recurrence"]
                / peak.best,
            # Adam's cost is proportional to the parameters it updates; the embeddings are a third of them and a
            # batch touches a few hundred of their 16,000 rows (lazy/sparse Adam changes the other rows' update)
            "Adam on the embedding rows a batch uses only (estimate: the embeddings' share of Adam's time)":
                seconds["optimizer (clip + Adam)"] * embedding_share,
        }
        levers.append((label, whole, saved))
        profiles += [f"### {label}", "", "```", profile_table(model, source_length, target_length), "```", ""]
    lever_lines = []
    for label, whole, saved in levers:
        lever_lines += [f"### {label}", "", "| lever | saves ms | step speed-up |", "|---|---:|---:|"]
        for name, ms in sorted(saved.items(), key=lambda item: -item[1]):
            lever_lines.append(f"| {name} | {ms * 1e3:.1f} | {whole / (whole - ms):.2f}x |")
        lever_lines.append("")
    command = " ".join(["python -m benchmarks.peers.step_profile", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# One rnnkit training step of the JoeyNMT-comparison model",
        "",
        f"`{command}`: torch {torch.__version__}, {machine()}, {torch.get_num_threads()} thread(s); median of "
        f"{args.repeats} timings per part. sgemm peak {peak.best / 1e9:.0f} GFLOP/s (median {peak.median / 1e9:.0f}). "
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_average()}.",
        "",
        "Model: GRU, additive attention, input feeding, E 256, encoder 2 x 256, decoder 512, vocabularies 8,000; "
        f"batch {BATCH}, every sentence of the same length. Each part is timed alone (forward and backward); "
        "the remainder is the whole step less the parts.",
        "",
        *tables,
        "## Levers, largest saving first: measured (fused Adam, the output layer once) or estimated from the parts",
        "",
        *lever_lines,
        "## torch.profiler: top operators of three whole steps (self CPU time)",
        "",
        *profiles,
    ]
    write_results("\n".join(lines), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
