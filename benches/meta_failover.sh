#!/usr/bin/env bash
# Meta failover under load: a real etcd (TTL 1 s, --election-timeout 500),
# three metas, three nodes of two shards, four clients writing and reading
# through the client library and a DDL loop. SIGKILLs the leader meta
# KILLS times and prints, per kill, the time to the first successful DDL
# through a new leader and the longest gap in the clients' successes, then
# the median and worst (docs/meta-ha.md, docs/BENCHMARKS.md "Meta failover").
#
#   benches/meta_failover.sh [KILLS]      (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
kills="${1:-10}"
MARKAB_META_KILLS="$kills" cargo test --release --test meta_ha leader_killed_under_load \
  -- --nocapture 2>&1 | grep -E "^kill |^meta leader kills|test result"
