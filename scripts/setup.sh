#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for knobs — the compiler and libraries the native
# backend builds against, the real data sets the recipes and tests train on — then the npm packages.
# Used by the README's quick start and by CI, so both get the same system packages.
#
#   scripts/setup.sh           what the tests need: every npm package (`npm ci`), as CI installs
#   scripts/setup.sh --user    what a user needs to train, evaluate and generate (the quick start):
#                              no optional packages (node-llama-cpp's ~680 MB of llama.cpp binaries,
#                              a test-only judge) and no install scripts (better-sqlite3's ~1.5 min
#                              build from source, needed only by `knobs serve`/`keys`); knobs' own
#                              addon and its TypeScript (src/ only) are then built explicitly
#   scripts/setup.sh --bench   also the peers `npm run bench` measures against (PyTorch)
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(g++ make python3 libopenblas-dev libdnnl-dev dataset-fashion-mnist bible-kjv)
user=0
for arg in "$@"; do
  case "$arg" in
    --bench) PACKAGES+=(python3-torch python3-numpy) ;;
    --user) user=1 ;;
    *) echo "usage: scripts/setup.sh [--user] [--bench]" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  echo "knobs setup: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
fi
if [ "$user" -eq 1 ]; then
  npm ci --omit=optional --ignore-scripts
  node scripts/build-native.mjs
  npx tsc -p tsconfig.src.json # the library and CLI only; `npm test` builds the tests too
else
  npm ci
fi
