"""Runs inside JoeyNMT's own virtual environment (see benchmarks/peers/joeynmt.py): never imports rnnkit.

Modes:

* ``train CONFIG --budget SECONDS --report OUT.json``: JoeyNMT's own ``train`` command (``joeynmt train
  CONFIG --skip-test``) with a time budget. JoeyNMT has none, but it stops cleanly on KeyboardInterrupt (it
  saves the current weights as ``latest.ckpt``); the first training step that would start after the budget
  raises it instead, which is where rnnkit's ``--time-budget`` stops too (it checks after each step). The
  budget counts from the start of ``TrainManager.train_and_validate``, as rnnkit's from the start of its
  training loop. The report: steps, target tokens trained (JoeyNMT's own count, EOS included, padding not),
  training seconds, the model's parameters by name, a FLOP check, and the process's peak RSS.
* ``count --dims S,T,E,HE,H --report OUT.json``: build JoeyNMT's model at those sizes (vocabularies of S
  and T entries, specials included) and report its parameters, without data (for the tests).

The FLOP check runs one forward and backward of the trained model on a small batch without padding under
torch.utils.flop_counter and compares with ``benchmarks/peers/model.py`` (imported by path).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

# This folder holds joeynmt.py (the benchmark), which would hide the joeynmt package: take it off the path,
# and load model.py (plain arithmetic, no rnnkit) by its file name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if __package__:
    from benchmarks.peers import model as analytic
else:
    _spec = importlib.util.spec_from_file_location("peers_model", _HERE / "model.py")
    analytic = importlib.util.module_from_spec(_spec)
    sys.modules["peers_model"] = analytic  # dataclasses look their module up
    _spec.loader.exec_module(analytic)


def peak_rss_mib() -> float:
    """VmHWM of this process (its own address space: exec started it afresh)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _specials() -> SimpleNamespace:
    from joeynmt.config import _check_special_symbols  # JoeyNMT's defaults: unk 0, pad 1, bos 2, eos 3

    return SimpleNamespace(**_check_special_symbols({}))


def _model_config(dims: analytic.Dims) -> dict:
    """The ``model`` section of the JoeyNMT config for ``dims`` (the benchmark writes the same one)."""
    return {
        "initializer": "xavier_uniform", "embed_initializer": "normal", "bias_initializer": "zeros",
        "encoder": {"type": "recurrent", "rnn_type": "gru", "hidden_size": dims.encoder_hidden,
                    "bidirectional": True, "num_layers": 1, "dropout": 0.0,
                    "embeddings": {"embedding_dim": dims.embedding, "scale": False, "dropout": 0.0}},
        "decoder": {"type": "recurrent", "rnn_type": "gru", "hidden_size": dims.decoder_hidden,
                    "attention": "bahdanau", "input_feeding": True, "init_hidden": "bridge",
                    "num_layers": 1, "dropout": 0.0, "hidden_dropout": 0.0,
                    "embeddings": {"embedding_dim": dims.embedding, "scale": False, "dropout": 0.0}},
    }


def build(dims: analytic.Dims):
    """JoeyNMT's model at ``dims``, with made-up vocabularies of the right sizes."""
    from joeynmt.model import build_model
    from joeynmt.vocabulary import Vocabulary

    specials = _specials()
    vocab = {side: Vocabulary([f"{side}{i}" for i in range(size - 4)], specials)
             for side, size in (("s", dims.source_vocab), ("t", dims.target_vocab))}
    return build_model(_model_config(dims), src_vocab=vocab["s"], trg_vocab=vocab["t"])


def parameters(model: torch.nn.Module) -> dict:
    return {"total": sum(p.numel() for p in model.parameters()),
            "by_name": {name: list(p.shape) for name, p in model.named_parameters()}}


def dims_of(model) -> analytic.Dims:
    return analytic.Dims(len(model.src_vocab), len(model.trg_vocab), model.src_embed.embedding_dim,
                         model.encoder.rnn.hidden_size, model.decoder.hidden_size)


def flop_check(model, batch: int = 4, source_length: int = 5, target_length: int = 6) -> dict:
    """Matrix-product FLOPs of one training step counted by torch, and the analytic count (no padding)."""
    from torch.utils.flop_counter import FlopCounterMode

    dims = dims_of(model)
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(4, dims.source_vocab, (batch, source_length), generator=generator)
    trg_input = torch.randint(4, dims.target_vocab, (batch, target_length), generator=generator)
    trg = torch.randint(4, dims.target_vocab, (batch, target_length), generator=generator)
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        out, _, _, _ = model._encode_decode(src=src, trg_input=trg_input, src_mask=(src != 1).unsqueeze(1),
                                            src_length=torch.full((batch,), source_length),
                                            trg_mask=(trg_input != 1).unsqueeze(1))
        torch.nn.functional.cross_entropy(out.flatten(0, 1), trg.flatten()).backward()
    model.zero_grad(set_to_none=True)
    counts = analytic.Counts.of([(source_length, target_length)] * batch)
    # the encoder's zero initial state needs no gradient: torch skips dL/dh_0, one product per direction
    skipped = 2 * 2 * batch * model.encoder.rnn.weight_hh_l0.numel()
    return {"counted": counter.get_total_flops() + skipped, "analytic": analytic.training_flops(dims, counts)}


def train(config: Path, budget: float, report: Path) -> None:
    import joeynmt.__main__ as joey_main
    from joeynmt import training

    figures: dict = {}
    original = training.TrainManager.train_and_validate

    def train_within_budget(self, train_data, valid_data):
        start = time.monotonic()
        step = self._train_step

        def budgeted_step(batch):
            if time.monotonic() - start >= budget:
                figures["seconds"] = time.monotonic() - start
                raise KeyboardInterrupt  # JoeyNMT stops and saves latest.ckpt
            return step(batch)

        self._train_step = budgeted_step
        try:
            original(self, train_data, valid_data)
        finally:
            figures.setdefault("seconds", time.monotonic() - start)  # the epochs ran out first
            figures.update(steps=int(self.stats.steps), target_tokens=int(self.stats.total_tokens),
                           epochs=int(self.stats.epochs), parameters=parameters(self.model),
                           vocab={"source": len(self.model.src_vocab), "target": len(self.model.trg_vocab)},
                           flops=flop_check(self.model))

    training.TrainManager.train_and_validate = train_within_budget
    sys.argv = ["joeynmt", "train", str(config), "--skip-test"]
    joey_main.main()
    figures["peak_rss_mib"] = peak_rss_mib()
    figures["threads"] = torch.get_num_threads()
    report.write_text(json.dumps(figures, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    train_parser = sub.add_parser("train")
    train_parser.add_argument("config", type=Path)
    train_parser.add_argument("--budget", type=float, required=True)
    train_parser.add_argument("--report", type=Path, required=True)
    count_parser = sub.add_parser("count")
    count_parser.add_argument("--dims", required=True, help="S,T,E,HE,H")
    count_parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.mode == "train":
        train(args.config, args.budget, args.report)
    else:
        dims = analytic.Dims(*(int(n) for n in args.dims.split(",")))
        model = build(dims)
        args.report.write_text(json.dumps({"parameters": parameters(model), "flops": flop_check(model)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
