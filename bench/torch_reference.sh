#!/bin/sh
# Re-measures the PyTorch reference numbers in docs/evidence.md, one run at a time, and writes
# bench/results/torch-<recipe>.jsonl (one torch_train.py summary per line, per seed) plus each
# run's metrics.jsonl under bench/results/torch-<recipe>-s<seed>/.
#
#   sh bench/torch_reference.sh [mlp] [cnn] [gpt] [llama]      (default: all four)
#
# Needs /usr/bin/python3 with python3-torch, dataset-fashion-mnist, and for gpt and llama kjv.txt in the
# current directory (bible 'Gen1:1-Rev22:21' > kjv.txt; package bible-kjv).
# THREADS (default 1) sets torch's threads; NICE (default 10) the niceness.
set -eu
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
THREADS=${THREADS:-1}
NICE=${NICE:-10}
RES=bench/results
mkdir -p "$RES"
what=${*:-mlp cnn gpt llama}

classifier() { # recipe name
  out="$RES/torch-$1.jsonl"
  : > "$out"
  for seed in 1 2 3; do
    nice -n "$NICE" $PY bench/torch_train.py "recipes/$1.json" --seed "$seed" --threads "$THREADS" --quiet \
      --out "$RES/torch-$1-s$seed" >> "$out"
    rm -f "$RES/torch-$1-s$seed/summary.json"
    tail -n 1 "$out" | $PY -c 'import json,sys; s=json.load(sys.stdin); print(s["recipe"], "seed", s["seed"], "accuracy", s["final"]["accuracy"], "wall_s", s["wall_s"])'
  done
}

language_model() { # recipe name
  [ -f kjv.txt ] || { echo "kjv.txt missing: bible 'Gen1:1-Rev22:21' > kjv.txt" >&2; exit 2; }
  nice -n "$NICE" $PY bench/torch_train.py "recipes/$1.json" --seed 0 --threads "$THREADS" --quiet \
    --out "$RES/torch-$1-s0" > "$RES/torch-$1.jsonl"
  rm -f "$RES/torch-$1-s0/summary.json"
  $PY -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["recipe"], [(e["step"], round(e["eval_loss"], 4)) for e in s["evals"]], "wall_s", s["wall_s"])' "$RES/torch-$1.jsonl"
}

for w in $what; do
  case $w in
    mlp) classifier fashion-mlp ;;
    cnn) classifier fashion-cnn ;;
    gpt) language_model kjv-gpt ;;
    llama) language_model kjv-llama ;;
    *) echo "unknown: $w (mlp, cnn, gpt, llama)" >&2; exit 2 ;;
  esac
done
