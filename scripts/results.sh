#!/usr/bin/env bash
# Reproduce the README's results table: train each task on its real dataset with the CLI, evaluate on the
# held-out test split, and print the metrics. Runs take the time budgets shown (about 80 minutes in all on
# 2 cores). Usage: bash scripts/results.sh [OUT_DIR]   (default runs/results)
set -euo pipefail
cd "$(dirname "$0")/.."
RNNKIT=.venv/bin/rnnkit
OUT=${1:-runs/results}
mkdir -p "$OUT"

train() {  # train TASK NAME ARGS...: train into $OUT/NAME (replacing an earlier run) and evaluate on test
    local task=$1 name=$2
    shift 2
    echo "== rnnkit train $task $* --out $OUT/$name"
    $RNNKIT train "$task" "$@" --out "$OUT/$name" --overwrite --no-progress > "$OUT/$name.train.json"
    $RNNKIT eval "$OUT/$name" --split test | tee "$OUT/$name.test.json"
}

uptime
train lm shakespeare --data shakespeare --time-budget 300
$RNNKIT generate "$OUT/shakespeare" --prompt "ROMEO:" --temperature 0.8 --length 300 --seed 0 | tee "$OUT/shakespeare.sample.txt"
train classify rotten-tomatoes --data rotten-tomatoes --time-budget 180
train tag turkish-pos --data turkish-pos --time-budget 180
train forecast sunspots --data sunspots --time-budget 60
# Penn Treebank, Zaremba et al. (2014) "small": 13 epochs with the paper's settings (about 23 minutes on 2 cores)
train lm ptb-small --config configs/ptb-small.toml
.venv/bin/python scripts/plot_perplexity.py "$OUT/ptb-small" "$OUT/ptb-small.png" \
    --reference "Zaremba et al. 2014, valid=120.7" --reference "Zaremba et al. 2014, test=114.5" \
    --title "PTB word LM, Zaremba et al. small (2x200 LSTM, no dropout)"
# CMUdict grapheme-to-phoneme: 30 minutes of training (Yao & Zweig 2015 for comparison)
train translate cmudict-g2p --config configs/cmudict-g2p.toml
.venv/bin/python scripts/plot_g2p.py "$OUT/cmudict-g2p" "$OUT/cmudict-g2p.png"
uptime
