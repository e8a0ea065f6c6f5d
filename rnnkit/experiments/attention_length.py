"""Accuracy against source length, with and without attention (Bahdanau et al. 2014, Fig. 2, in miniature).

The task is reversing a sequence of symbols (:mod:`rnnkit.experiments.reversal`, which trains and evaluates
the models; this module runs it twice and reports). Without attention the decoder sees the source only
through the encoder's fixed-size summary, so its accuracy falls as sources grow longer; with attention each
output step looks up the source position it needs (the attention map of a long source is an anti-diagonal).

Settings: the full setting is the reversal module's model (bidirectional LSTM encoder, Luong decoder with
"general" attention, or the same decoder without attention) trained for 2,000 steps on sources of 5 to 30
symbols; the quick setting trains for 300 steps on sources of 5 to 20 symbols (buckets 5-10, 11-20).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rnnkit.diagnostics import attention_maps
from rnnkit.experiments.harness import finish, plot_curves, threads
from rnnkit.experiments.reversal import FIRST_SYMBOL, ReversalConfig, reversal_batch, run_reversal
from rnnkit.plots import plot_attention

__all__ = ["AttentionLengthConfig", "QUICK", "FULL", "run_config", "run"]


@dataclass
class AttentionLengthConfig:
    """Settings: the reversal configuration shared by both models, and the attention of the one that has it."""

    reversal: ReversalConfig
    attention: str = "general"
    threads: int | None = None


FULL = AttentionLengthConfig(ReversalConfig(steps=2000))
QUICK = AttentionLengthConfig(ReversalConfig(steps=300, max_length=20, eval_sentences=50,
                                             buckets=((5, 10), (11, 20))))


def _symbols(ids: list[int]) -> list[str]:
    return [chr(ord("a") + i - FIRST_SYMBOL) for i in ids]


def run_config(config: AttentionLengthConfig, out: Path) -> dict[str, Any]:
    """Train with and without attention, write the report into ``out`` and return its figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with threads(config.threads):
        results = {
            "attention": run_reversal(replace(config.reversal, attention=config.attention)),
            "no attention": run_reversal(replace(config.reversal, attention=None)),
        }
    figures: dict[str, Any] = {}
    for label, result in results.items():
        figures[label] = {
            "bucket_accuracy": result.bucket_accuracy,
            "length_accuracy": result.length_accuracy,
            "train_seconds": result.train_seconds,
            "final_loss": result.final_loss,
            "parameters": result.model.num_parameters(),
        }
    plots = [plot_curves(
        {f"{label} ({config.attention})" if label == "attention" else label:
         (list(r.length_accuracy), list(r.length_accuracy.values())) for label, r in results.items()},
        out / "accuracy_by_length.png", title="Reversal: token accuracy by source length",
        xlabel="source length", ylabel="greedy token accuracy",
    )]  # fmt: skip

    # One long test source through the attention model: its map should be an anti-diagonal.
    model = results["attention"].model
    reversal = config.reversal
    generator = torch.Generator().manual_seed(reversal.seed + 2000)
    length = reversal.max_length
    src, src_lengths, tgt_in, _ = reversal_batch(1, reversal.symbols, length, length, generator)
    maps = attention_maps(model, src, src_lengths, tgt_in)
    if maps is not None:
        source = _symbols(src[0].tolist())
        target = ["<bos>"] + list(reversed(source))[:-1]  # the decoder inputs of each step
        plots.append(plot_attention(maps.weights[0][:length], source, target[:length], out / "attention.png",
                                    title=f"Attention on a source of {length} symbols"))
        figures["attention"]["example_mean_entropy"] = maps.mean_entropy
    table = {
        label: ", ".join(f"{bucket}: {accuracy:.3f}" for bucket, accuracy in r.bucket_accuracy.items())
        + f" ({r.train_seconds:.0f} s)"
        for label, r in results.items()
    }
    text = [
        "Greedy token accuracy on fresh random sources, per source length and per bucket of lengths; the two "
        "models are identical except that one decoder attends over the encoder outputs.",
    ]
    return finish(out, "Attention against source length", figures, config=config, plots=plots,
                  tables={"accuracy by bucket": table}, text=text)


def run(quick: bool, out: Path, seed: int = 0) -> dict[str, Any]:
    """The registry entry: the quick (CI) or full setting with ``seed``."""
    config = QUICK if quick else FULL
    return run_config(replace(config, reversal=replace(config.reversal, seed=seed)), out)
