"""The learning curve of a G2P translation run: training and validation loss, and validation WER against the
first and against any listed pronunciation, beside the goal. Usage: python scripts/plot_g2p.py RUN_DIR OUT.png

Read from RUN_DIR/metrics.jsonl: the logged training steps and every evaluation (the validation words it
decodes, greedy).
"""

import argparse
import json
from pathlib import Path

from rnnkit.plots import plot_curve_panels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_png", type=Path)
    parser.add_argument("--goal", type=float, default=25.0, help="a horizontal line at this WER %% (0: none)")
    parser.add_argument("--title", default="CMUdict grapheme-to-phoneme")
    args = parser.parse_args()
    events = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train = [e for e in events if e.get("event") == "train"]
    valid = [e for e in events if e.get("event") == "eval"]
    if not valid or "wer" not in valid[0]["metrics"]:
        raise SystemExit(f"{args.run_dir}: no evaluation with a WER (a run with word-level targets is needed)")
    steps = [e["step"] for e in valid]
    config = json.loads((args.run_dir / "config.json").read_text()) if (args.run_dir / "config.json").exists() else {}
    smoothing = config.get("settings", {}).get("label_smoothing") or 0
    training_label = f"training loss (label smoothing {smoothing:g})" if smoothing else "training loss"
    losses = {training_label: ([e["step"] for e in train], [e["loss"] for e in train]),
              "validation loss": (steps, [e["metrics"]["loss"] for e in valid])}
    errors = {"WER, first pronunciation": (steps, [100 * e["metrics"]["wer"] for e in valid])}
    if "wer_any" in valid[0]["metrics"]:
        errors["WER, any pronunciation"] = (steps, [100 * e["metrics"]["wer_any"] for e in valid])
    plot_curve_panels([
        {"curves": losses, "title": "loss", "xlabel": "step", "ylabel": "cross-entropy (nats/phoneme)",
         "log_y": True},
        {"curves": errors, "title": "validation (greedy)", "xlabel": "step", "ylabel": "validation WER %",
         "lines": {f"goal {args.goal:g}%": args.goal} if args.goal else None},
    ], args.out_png, title=args.title)
    print(args.out_png)


if __name__ == "__main__":
    main()
