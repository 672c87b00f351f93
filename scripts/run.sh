#!/usr/bin/env bash
# Builds Markab (release) and runs `markab` with the given arguments, e.g.
#   scripts/run.sh replica --config tuning/standalone.toml
#   scripts/run.sh shell --node 127.0.0.1:34801 --table temp
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cargo build --release --bin markab
exec "$CARGO_TARGET_DIR/release/markab" "$@"
