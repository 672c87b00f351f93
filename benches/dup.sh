#!/usr/bin/env bash
# Duplication between two clusters (docs/duplication.md): onebox A (3 nodes
# × 2 shards, cluster id 1; usertable 8 partitions × 3 replicas) duplicates
# usertable to onebox B (1 node × 2 shards, cluster id 2; 8 partitions × 1
# replica), both on this machine.
#
# 1. A's write capacity: RECORDS pegasus inserts (500 B) at full speed.
# 2. The lag: a steady insert load at half that capacity for DURATION_S s,
#    while `markab dup-lag` writes a probe every 50 ms and times each from
#    its acknowledgement by A until B shows it (p50, p99, max).
# 3. Catch-up: B stopped (SIGTERM to its onebox), the same insert load runs
#    OUTAGE_S s (default 30) on A, B restarts, and the time until every
#    partition's lag is zero gives the catch-up rate (records behind / s).
#
#   benches/dup.sh [RECORDS] [DURATION_S] [OUTAGE_S] [OUT]
#   MARKAB_BIN=/path/to/markab benches/dup.sh    # a prebuilt binary
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-200000}
duration_s=${2:-30}
outage_s=${3:-30}
out=${4:-/var/tmp/markab-dup}
source scripts/env.sh
source benches/lib.sh
markab=$(markab_binary)
rm -rf "$out"
mkdir -p "$out"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

# start_onebox NAME STARTS ARGS..: starts a onebox into $out/NAME (its
# STARTS-th start there); sets $onebox_pid and waits (bounded) for its
# ready line.
start_onebox() {
  local name=$1 starts=$2
  shift 2
  "$markab" onebox --dir "$out/$name" --table usertable --partitions 8 "$@" \
    >>"$out/$name.out" 2>&1 &
  onebox_pid=$!
  pids+=("$onebox_pid")
  for _ in $(seq 1200); do
    [ "$(grep -c "markab onebox ready" "$out/$name.out")" -ge "$starts" ] && return
    sleep 0.1
  done
  echo "onebox $name did not start; see $out/$name.out" >&2
  exit 1
}
meta_of() { grep -o "meta=[0-9.:]*" "$out/$1.out" | tail -1 | cut -d= -f2; }

start_onebox a 1 --nodes 3 --shards 2 --replicas 3 --cluster-id 1
meta_a=$(meta_of a)
start_onebox b 1 --nodes 1 --shards 2 --replicas 1 --cluster-id 2
b_pid=$onebox_pid
meta_b=$(meta_of b)
shell_a() { "$markab" shell --meta "$meta_a" -e "$1"; }
shell_a "dup add usertable $meta_b" >"$out/dup-add.txt"
# The records A's primaries have not yet seen confirmed by B.
lag_decrees() {
  shell_a 'dup list usertable' | grep -o 'lag_decrees=[0-9]*' | cut -d= -f2 |
    awk '{ total += $1 } END { print total + 0 }'
}
reported() { shell_a 'dup list usertable' | grep -c 'lag_decrees=' || true; }
wait_caught_up() {
  local bound_s=$1 started
  started=$(date +%s)
  until [ "$(reported)" = 8 ] && [ "$(lag_decrees)" = 0 ]; do
    if [ $(($(date +%s) - started)) -gt "$bound_s" ]; then
      echo "B did not catch up within $bound_s s:" >&2
      shell_a 'dup list usertable' >&2
      exit 1
    fi
    sleep 0.05
  done
}
wait_caught_up 60

echo "== A's write capacity: $records inserts at full speed"
"$markab" bench --target "markab://$meta_a" --table usertable --workload pegasus \
  --phase load --records "$records" --connections 16 --quiet --json "$out/capacity.jsonl" \
  >"$out/capacity.txt"
capacity=$(python3 -c "import json,sys; print(int(json.loads(open(sys.argv[1]).readline())['throughput_ops_s']))" "$out/capacity.jsonl")
rate=$((capacity / 2))
echo "capacity $capacity inserts/s; steady load at $rate/s"
wait_caught_up 300

steady_load() {
  "$markab" bench --target "markab://$meta_a" --table usertable --workload pegasus \
    --phase load --records $((rate * $1)) --target-rate "$rate" --connections 16 \
    --quiet --json "$out/$2.jsonl" >"$out/$2.txt"
}
echo "== lag under a steady load of $rate inserts/s for $duration_s s"
steady_load "$duration_s" steady &
load_pid=$!
sleep 2
"$markab" dup-lag --from "$meta_a" --to "$meta_b" --table usertable \
  --probes $(((duration_s - 4) * 1000 / 55)) --interval-ms 50 | tee "$out/lag.txt"
wait "$load_pid"
wait_caught_up 120

echo "== B stopped for $outage_s s under the same load, then restarted"
kill -TERM "$b_pid"
wait "$b_pid" || true
steady_load "$outage_s" outage
behind=$(lag_decrees)
restarted=$(date +%s.%N)
start_onebox b 2 --nodes 1 --shards 2 --replicas 1 --cluster-id 2
wait_caught_up 600
caught_up=$(date +%s.%N)
python3 - "$behind" "$restarted" "$caught_up" <<'PY'
import sys
behind, start, end = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
took = end - start
print(f"catch-up: {behind} records behind when B restarted, shipped in {took:.1f} s "
      f"(B's restart included): {behind / took:.0f} records/s")
PY
