"""The learning curve of a G2P translation run: training and validation loss, and validation WER against the
first and against any listed pronunciation, beside the goal. Usage: python scripts/plot_g2p.py RUN_DIR OUT.png

Read from RUN_DIR/metrics.jsonl: the logged training steps and every evaluation (the validation words it
decodes, greedy).
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    figure, (losses, errors) = plt.subplots(1, 2, figsize=(10, 3.6))
    losses.plot([e["step"] for e in train], [e["loss"] for e in train], lw=0.8, label="training loss")
    losses.plot([e["step"] for e in valid], [e["metrics"]["loss"] for e in valid], "o-", ms=3,
                label="validation loss")
    losses.set(yscale="log", xlabel="step", ylabel="cross-entropy (nats/phoneme)", title="loss")
    losses.legend()
    steps = [e["step"] for e in valid]
    errors.plot(steps, [100 * e["metrics"]["wer"] for e in valid], "o-", ms=3, label="WER, first pronunciation")
    if "wer_any" in valid[0]["metrics"]:
        errors.plot(steps, [100 * e["metrics"]["wer_any"] for e in valid], "o-", ms=3,
                    label="WER, any pronunciation")
    if args.goal:
        errors.axhline(args.goal, color="gray", ls="--", lw=0.8, label=f"goal {args.goal:g}%")
    errors.set(xlabel="step", ylabel="validation WER %", title="validation (greedy)")
    errors.legend()
    figure.suptitle(args.title, fontsize=10)
    figure.tight_layout()
    figure.savefig(args.out_png, dpi=110)
    print(args.out_png)


if __name__ == "__main__":
    main()
