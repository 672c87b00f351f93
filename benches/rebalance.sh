#!/usr/bin/env bash
# Rebalance after adding two nodes to three (docs/balance.md): a onebox of 3
# nodes (2 shards each) holds a table of 32 partitions × 3 replicas loaded
# with RECORDS pegasus records (500 B each: 2,000,000 ≈ 1 GiB); onebox
# restarts with 5 nodes (the two new ones get nothing at level steady); a
# YCSB-A run at RATE ops/s for DURATION s is measured undisturbed, then the
# same run again while meta, set lively, rebalances. Prints the rebalance
# time and both runs' p99s and error counts; the runs' JSON lines are in
# OUT/runs.jsonl. COPY_RATE (bytes per second; default: the tuning's own
# default) sets the nodes' `copy_bytes_per_second`, and MOVES_MAX meta's
# `balance_moves_max`, for the five-node run. With LOADED=DIR set, the
# loaded three-node onebox is saved to DIR after loading, and a later run
# with the same RECORDS starts from that copy instead of loading again.
#
#   benches/rebalance.sh [RECORDS] [RATE] [DURATION_S] [OUT] [COPY_RATE] [MOVES_MAX]
#   MARKAB_BIN=/path/to/markab benches/rebalance.sh    # a prebuilt binary
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-2000000}
rate=${2:-2000}
duration_s=${3:-180}
out=${4:-/var/tmp/markab-rebalance}
copy_rate=${5:-}
moves_max=${6:-}
source scripts/env.sh
source benches/lib.sh
markab=$(markab_binary)
rm -rf "$out"
mkdir -p "$out"
onebox_pid=

start_onebox() {
  "$markab" onebox --dir "$out/onebox" --nodes "$1" --shards 2 --table usertable \
    --partitions 32 --replicas 3 >"$out/onebox-$1.out" 2>&1 &
  onebox_pid=$!
  for _ in $(seq 1200); do
    grep -q "markab onebox ready" "$out/onebox-$1.out" && return
    sleep 0.1
  done
  echo "onebox of $1 nodes did not start; see $out/onebox-$1.out" >&2
  exit 1
}
stop_onebox() {
  [ -n "$onebox_pid" ] && kill -TERM "$onebox_pid" 2>/dev/null && wait "$onebox_pid" || true
  onebox_pid=
}
trap stop_onebox EXIT

shell() { "$markab" shell --meta "$meta" -e "$1"; }
# The balancer's plan is empty, nothing moves, and the alive nodes' replica
# and primary counts are within one of each other (a plan is also empty
# while partitions are short of replicas).
settled() {
  shell 'moves' | grep -q '^moves *: 0$' && shell 'balance -n' | grep -q '^moves *: 0$' &&
    shell 'nodes' | awk '$2 == "ALIVE" { r[NR] = $3; p[NR] = $4 }
      END { for (i in r) for (j in r) if (r[i] - r[j] > 1 || p[i] - p[j] > 1) exit 1 }'
}
bench_run() {
  "$markab" bench --target "markab://$meta" --table usertable --workload pegasus \
    --records "$records" --phase run --operations $((rate * duration_s)) \
    --target-rate "$rate" --duration-s "$duration_s" --quiet --json "$out/runs.jsonl" \
    >"$out/$1.txt"
}

loaded=${LOADED:-}
if [ -n "$loaded" ] && [ -f "$loaded/records-$records" ]; then
  echo "== copying the onebox loaded with $records records from $loaded"
  cp -a "$loaded/onebox" "$out/onebox"
  # Its configs name their directories: point them at this copy.
  sed -i "s#$(cat "$loaded/saved-from")/#$out/#g" "$out"/onebox/*.toml
else
  start_onebox 3
  meta=$(grep -o "meta=[0-9.:]*" "$out/onebox-3.out" | cut -d= -f2)
  echo "== loading $records records"
  "$markab" bench --target "markab://$meta" --table usertable --workload pegasus \
    --records "$records" --phase load --connections 16 --quiet >"$out/load.txt"
  stop_onebox
  if [ -n "$loaded" ]; then
    rm -rf "$loaded"
    mkdir -p "$loaded"
    cp -a "$out/onebox" "$loaded/onebox"
    echo "$out" >"$loaded/saved-from"
    touch "$loaded/records-$records"
  fi
fi
du -sh "$out/onebox" | sed 's/^/data on disk (3 replicas): /'
if [ -n "$copy_rate" ]; then
  echo "copy_bytes_per_second = $copy_rate" >>"$out/onebox/tuning/default.toml"
fi
if [ -n "$moves_max" ]; then
  echo "balance_moves_max = $moves_max" >>"$out/onebox/meta.toml"
fi
start_onebox 5
meta=$(grep -o "meta=[0-9.:]*" "$out/onebox-5.out" | cut -d= -f2)
sleep 5
echo "== undisturbed run (5 nodes, level steady: the two new ones idle)"
shell 'nodes' >"$out/nodes-before.txt"
bench_run undisturbed
echo "== the same run while meta rebalances (level lively)"
bench_run rebalancing &
bench_pid=$!
started=$(date +%s.%N)
shell 'set_meta_level lively' >/dev/null
sleep 2
# Bounded: a rebalance that has not settled in WAIT_MAX_S seconds (default
# 1200) is reported with the moves still planned.
wait_max_s=${WAIT_MAX_S:-1200}
waited=0
until settled; do
  sleep 1
  waited=$((waited + 1))
  if [ "$waited" -ge "$wait_max_s" ]; then
    echo "not balanced after $wait_max_s s; moves in flight and planned:"
    shell 'moves'
    shell 'balance -n'
    shell 'nodes'
    wait "$bench_pid"
    exit 1
  fi
done
finished=$(date +%s.%N)
shell 'nodes' >"$out/nodes-after.txt"
wait "$bench_pid"
echo "rebalance took $(awk "BEGIN { printf \"%.1f\", $finished - $started }") s"
cat "$out/nodes-after.txt"
python3 - "$out/runs.jsonl" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
for name, run in zip(["undisturbed", "rebalancing"], runs):
    ops = run["operations"]
    p99 = {op: ops[op]["response_us"]["p99"] for op in ops}
    errors = run["overall"]["errors"]
    print(f"{name}: {run['throughput_ops_s']:.0f} ops/s, response p99 us {p99}, errors {errors}")
if len(runs) == 2:
    for op in runs[0]["operations"]:
        before = runs[0]["operations"][op]["response_us"]["p99"]
        during = runs[1]["operations"].get(op, {}).get("response_us", {}).get("p99")
        if during:
            print(f"{op} p99 during / undisturbed: {during / before:.2f}")
PY
