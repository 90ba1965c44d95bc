#!/usr/bin/env bash
# Builds Vigil and runs it. With no options file it starts the built-in demo camera at
# rtsp://127.0.0.1:8554/demo.
#
#   scripts/run.sh [--config FILE.yaml] [other `vigil run` arguments…]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh build runtime
cargo build --release --locked --bin vigil
exec target/release/vigil run "$@"
