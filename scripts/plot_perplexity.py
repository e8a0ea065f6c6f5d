"""The learning curve of a word-level LM run: perplexity per epoch, training and validation, beside published
figures. Usage: python scripts/plot_perplexity.py RUN_DIR OUT.png [--reference LABEL=VALUE ...]

Training perplexity is exp of the mean training loss of each epoch's logged steps; validation perplexity is the
evaluation at the end of each epoch, from RUN_DIR/metrics.jsonl.
"""

import argparse
import json
import math
from pathlib import Path

from rnnkit.plots import plot_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_png", type=Path)
    parser.add_argument("--reference", action="append", default=[], metavar="LABEL=VALUE",
                        help="a horizontal line, e.g. 'Zaremba et al. valid=120.7'")
    parser.add_argument("--title", default="Penn Treebank word LM")
    args = parser.parse_args()
    events = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    losses: dict[int, list[float]] = {}
    for event in events:
        if event.get("event") == "train" and math.isfinite(event.get("loss", math.nan)):
            losses.setdefault(event["epoch"], []).append(event["loss"])
    train = sorted((epoch + 1, math.exp(sum(v) / len(v))) for epoch, v in losses.items())
    valid = [(e["epoch"] + 1, e["metrics"]["perplexity"]) for e in events if e.get("event") == "eval"]
    curves = {"training": ([x for x, _ in train], [y for _, y in train]),
              "validation": ([x for x, _ in valid], [y for _, y in valid])}
    span = [1, max(x for x, _ in train)]
    for reference in args.reference:  # flat lines, so that their labels sit in the legend
        label, _, value = reference.rpartition("=")
        curves[f"{label} {value}"] = (span, [float(value)] * 2)
    plot_curves(curves, args.out_png, title=args.title, xlabel="epoch", ylabel="perplexity", log_y=True)
    print(args.out_png)


if __name__ == "__main__":
    main()
