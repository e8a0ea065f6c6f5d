"""The copy-memory task (Hochreiter & Schmidhuber 1997; in the form of Arjovsky et al. 2016, section 4.1).

Ten symbols from an alphabet of 8 are shown, then T - 1 blanks and a delimiter, then 10 more blanks during
which the model must write the ten symbols back (:func:`rnnkit.data.generated.copy_memory`). The loss is the
cross-entropy per step over all T + 20 output steps.

The baseline: a memoryless model outputs blanks for T + 10 steps (which it can learn exactly, cost 0) and then
guesses uniformly among the 8 symbols, 10 ln 8 nats in all, so

    baseline(T) = 10 ln 8 / (T + 20)  nats per step      (0.693 at T = 10, 0.416 at T = 30, 0.173 at T = 100).

The claim checked in the full setting: an LSTM (one layer of 128 units, forget-gate bias 1, Adam at lr 1e-2
for 6,000 steps of 128 sequences, the rate times 0.3 for the last third) gets below half the baseline for
T <= 50; longer T are reported as they turn out (LSTMs are known to sit at the baseline
for a long time there: Arjovsky et al. 2016, Fig. 1).

Quick setting: T = 10 only, 1,200 steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnkit.data.generated import COPY_LENGTH, copy_memory, copy_memory_baseline
from rnnkit.experiments.harness import CELL_LABELS, TrainLog, finish, fit, plot_curves, set_forget_bias, threads
from rnnkit.models import SequenceTagger, SequenceTaggerConfig

__all__ = ["CopyMemoryConfig", "QUICK", "FULL", "copy_model", "evaluate_copy", "train_copy", "run_config", "run"]

VOCABULARY = 10  # blank 0, symbols 1..8, delimiter 9


@dataclass
class CopyMemoryConfig:
    """Settings (defaults: the full setting)."""

    lengths: tuple[int, ...] = (10, 20, 50, 100)
    cells: tuple[str, ...] = ("lstm",)
    hidden_size: int = 128
    embedding_size: int = 16
    steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-2
    decay_at: float | None = 2 / 3  # the learning rate times 0.3 for the last third
    clip_norm: float = 1.0
    forget_bias: float = 1.0
    train_size: int = 20_000
    test_size: int = 1000
    eval_every: int = 250
    claim_max_T: int = 50
    seed: int = 0
    threads: int | None = None


FULL = CopyMemoryConfig()
QUICK = CopyMemoryConfig(lengths=(10,), steps=1200, train_size=8000, test_size=500, eval_every=100)


def copy_model(cell: str, hidden_size: int, embedding_size: int, forget_bias: float | None) -> SequenceTagger:
    """Symbols -> embedding -> unidirectional recurrent layer -> one distribution over the 10 symbols per step."""
    model = SequenceTagger(SequenceTaggerConfig(cell=cell, vocab_size=VOCABULARY, num_tags=VOCABULARY,
                                                embedding_size=embedding_size, hidden_size=hidden_size,
                                                bidirectional=False))
    if forget_bias is not None:
        set_forget_bias(model, forget_bias)
    return model


@torch.no_grad()
def evaluate_copy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Cross-entropy per step (nats, all T + 20 steps) and the accuracy on the 10 recalled symbols."""
    model.eval()
    scores = model(inputs)  # (N, T + 20, 10)
    loss = nn.functional.cross_entropy(scores.flatten(0, 1), targets.flatten()).item()
    recalled = (scores[:, -COPY_LENGTH:].argmax(-1) == targets[:, -COPY_LENGTH:]).float().mean().item()
    return {"cross_entropy": loss, "recall_accuracy": recalled}


def train_copy(cell: str, T: int, config: CopyMemoryConfig) -> tuple[nn.Module, TrainLog, dict[str, float]]:
    """Train one model on copy memory with T blanks; returns it, its log (test cross-entropy curve) and its
    final test figures."""
    train = copy_memory("train", config.train_size, T, seed=config.seed)
    test = copy_memory("test", config.test_size, T, seed=config.seed)
    inputs, targets = torch.from_numpy(train.inputs), torch.from_numpy(train.targets)  # (N, T + 20) each
    test_inputs, test_targets = torch.from_numpy(test.inputs), torch.from_numpy(test.targets)
    torch.manual_seed(config.seed)
    model = copy_model(cell, config.hidden_size, config.embedding_size, config.forget_bias)
    log = fit(
        model, lambda index: ((inputs[index],), targets[index]), len(inputs), steps=config.steps,
        batch_size=config.batch_size, lr=config.lr, clip_norm=config.clip_norm, seed=config.seed,
        evaluate=lambda m: evaluate_copy(m, test_inputs, test_targets)["cross_entropy"],
        eval_every=config.eval_every, decay_at=config.decay_at,
    )  # fmt: skip
    return model, log, evaluate_copy(model, test_inputs, test_targets)


def run_config(config: CopyMemoryConfig, out: Path) -> dict[str, Any]:
    """Train a model per (cell, T), write the report into ``out`` and return its figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"baseline": {}, "runs": {}}
    curves = {}
    with threads(config.threads):
        for T in config.lengths:
            baseline = copy_memory_baseline(T)
            figures["baseline"][str(T)] = baseline
            for cell in config.cells:
                model, log, final = train_copy(cell, T, config)
                key = f"{cell}_T{T}"
                figures["runs"][key] = {
                    "cell": cell, "T": T, "baseline": baseline,
                    "final_cross_entropy": final["cross_entropy"],
                    "ratio_to_baseline": final["cross_entropy"] / baseline,
                    "below_half_baseline": final["cross_entropy"] < baseline / 2,
                    "recall_accuracy": final["recall_accuracy"],
                    "first_step_below_half": log.first_step_below(baseline / 2),
                    "train_seconds": log.seconds,
                    "curve": {"step": log.eval_steps, "cross_entropy": log.eval_values},
                }  # fmt: skip
                curves[f"{CELL_LABELS[cell]}, T = {T}"] = (
                    log.eval_steps, [v / baseline for v in log.eval_values])
    claimed = [r for r in figures["runs"].values() if r["cell"] == "lstm" and r["T"] <= config.claim_max_T]
    # the flag covers the lengths that were run (the quick setting runs T = 10 only), and says which
    figures["claim"] = {"lstm_below_half_baseline": all(r["below_half_baseline"] for r in claimed) if claimed
                        else None, "checked_T": [r["T"] for r in claimed]}
    plots = [plot_curves(curves, out / "cross_entropy.png", title="Copy memory: test loss / baseline",
                         ylabel="cross-entropy / (10 ln 8 / (T + 20))", log_y=True,
                         lines={"baseline": 1.0, "half the baseline": 0.5})]
    table = {
        f"{CELL_LABELS[r['cell']]}, T = {r['T']}":
            f"{r['final_cross_entropy']:.4f} nats/step (baseline {r['baseline']:.4f}, ratio "
            f"{r['ratio_to_baseline']:.3f}), recall accuracy {r['recall_accuracy']:.3f}, {r['train_seconds']:.0f} s"
        for r in figures["runs"].values()
    }  # fmt: skip
    text = [
        "Cross-entropy per output step on held-out sequences (payloads never seen in training); the memoryless "
        "baseline 10 ln 8 / (T + 20) is computed exactly. Recall accuracy: the argmax on the 10 steps that "
        "must reproduce the symbols (1/8 by guessing).",
        f"Claim (LSTM below half the baseline for T <= {config.claim_max_T}), checked at T = "
        f"{', '.join(map(str, figures['claim']['checked_T'])) or 'none'}: "
        f"{figures['claim']['lstm_below_half_baseline']}.",
    ]
    return finish(out, "Copy memory", figures, config=config, plots=plots, tables={"test loss": table},
                  text=text)


def run(quick: bool, out: Path, seed: int = 0) -> dict[str, Any]:
    """The registry entry: the quick (CI) or full setting with ``seed``."""
    return run_config(replace(QUICK if quick else FULL, seed=seed), out)
