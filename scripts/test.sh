#!/usr/bin/env bash
# Builds Vigil and runs every test, on a fresh Debian machine or an old one.
# This is the README's test command, and CI runs exactly this (after its lint steps).
#
#   scripts/test.sh [cargo test arguments…]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh all
# Every test binary runs even after one fails, so that one run shows every failure.
cargo test --locked --no-fail-fast "$@"
