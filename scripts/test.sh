#!/usr/bin/env bash
# The project's whole test run, as CI runs it: installs what it needs, checks
# the committed generated wire code, formatting and lints, then runs every
# test (unit, model-based, real-process integration) in the release profile.
set -euo pipefail
cd "$(dirname "$0")/.."
# The fault-injection tests (tests/chaos.rs, tests/damaged_replica.rs) add
# nftables rules, cgroups and loop and tmpfs mounts: they need root.
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the fault-injection tests need root; run: sudo -E scripts/test.sh" >&2
  exit 1
fi
scripts/setup.sh
source scripts/env.sh

echo "== generated wire code matches the schema (flatc 25.12.19)"
scripts/flatc-gen.sh --check
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (release profile, all targets, -D warnings)"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo test (release profile; the simulator runs 5,000 seeds, one thread per CPU)"
MARKAB_SIM_SEEDS="${MARKAB_SIM_SEEDS:-5000}" cargo test --release --workspace --all-targets
echo "== doc tests (release profile)"
cargo test --release --workspace --doc
