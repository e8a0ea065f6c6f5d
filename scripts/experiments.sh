#!/usr/bin/env bash
# Run every classic experiment in its full setting (the README's experiment figures), one after another,
# timing each. Each writes OUT/NAME/report.html and OUT/NAME/results.json; the timings go to OUT/times.txt.
# Usage: bash scripts/experiments.sh [OUT_DIR] [NAME ...]   (default runs/experiments, every experiment)
set -euo pipefail
cd "$(dirname "$0")/.."
RNNKIT=.venv/bin/rnnkit
OUT=${1:-runs/experiments}
shift || true
NAMES=("$@")
if [ ${#NAMES[@]} -eq 0 ]; then
    NAMES=(vanishing-gradients adding copy-memory attention-length sequential-digits lstm-vs-gru sentiment-baselines)
fi
mkdir -p "$OUT"
for name in "${NAMES[@]}"; do
    echo "== rnnkit experiment $name --out $OUT/$name   ($(uptime))"
    start=$(date +%s)
    $RNNKIT experiment "$name" --out "$OUT/$name" > "$OUT/$name.json"
    echo "$name $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
done
