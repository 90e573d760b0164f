#!/usr/bin/env bash
# The README's quick start: set up, train the tiny byte-level GPT on the King James Bible end to
# end, evaluate it, and generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --user
[ -s kjv.txt ] || bible 'Gen1:1-Rev22:21' > kjv.txt
out="runs/tiny-$(date -u +%Y%m%d-%H%M%S)"
npx knobs train recipes/tiny.json --out "$out"
npx knobs eval "$out"
npx knobs generate "$out" --prompt 'And God said' --max-tokens 200 --temperature 0.8 --seed 1
