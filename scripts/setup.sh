#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for knobs — the compiler and libraries the native
# backend builds against, the real data sets the recipes and tests train on — then `npm ci`.
# Used by the README's quick start and by CI, so both get exactly the same machine.
#
#   scripts/setup.sh           what the quick start and the tests need
#   scripts/setup.sh --bench   also the peers `npm run bench` measures against (PyTorch)
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(g++ make python3 libopenblas-dev libdnnl-dev dataset-fashion-mnist bible-kjv)
for arg in "$@"; do
  case "$arg" in
    --bench) PACKAGES+=(python3-torch python3-numpy) ;;
    *) echo "usage: scripts/setup.sh [--bench]" >&2; exit 2 ;;
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
npm ci
