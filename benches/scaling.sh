#!/usr/bin/env bash
# Multi-core scaling: how one node's throughput grows with its shards (one
# shard per core is the node's default). For each shard count S in SHARDS,
# starts a onebox of NODES nodes with S shards each, a table of 64
# partitions and REPLICAS replicas, loads RECORDS YCSB records (durable
# inserts, 10 × 100 B; every one) and runs YCSB-C (100 % reads) for DURATION_S seconds,
# each closed loop with 8 × S connections × 4 in flight. Prints, per S,
# throughput, p99 and the nodes' CPU per operation (meta and every node
# process, from /proc), and the ratio to S = 1. Needs a machine with more
# cores than NODES × max(SHARDS) plus the driver's share; on two cores it
# only shows that shards share the cores.
#
#   benches/scaling.sh [SHARDS] [RECORDS] [DURATION_S] [OUT]
#   REPLICAS=3 NODES=3 benches/scaling.sh "1 2 4"
#   MARKAB_BIN=/path/to/markab benches/scaling.sh    # a prebuilt binary
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
shard_counts=${1:-1 2 4 8}
records=${2:-100000}
duration_s=${3:-15}
out=${4:-/var/tmp/markab-scaling}
nodes=${NODES:-1}
replicas=${REPLICAS:-1}
source scripts/env.sh
if [ -n "${MARKAB_BIN:-}" ]; then
  markab="$MARKAB_BIN"
else
  cargo build --release --quiet --bin markab
  markab="$CARGO_TARGET_DIR/release/markab"
fi
rm -rf "$out"
mkdir -p "$out"
onebox_pid=
stop_onebox() {
  [ -n "$onebox_pid" ] && kill -TERM "$onebox_pid" 2>/dev/null && wait "$onebox_pid" || true
  onebox_pid=
}
trap stop_onebox EXIT

ticks_per_s=$(getconf CLK_TCK)


# NAME PHASE CONNECTIONS SERVER_PID... -> one JSON line in OUT/runs.jsonl
# with "shards", "phase_name" and "server_cpu_s" added.
measure() {
  local name=$1 phase=$2 connections=$3 shards=$4
  shift 4
  local before after json cap=()
  # The load inserts every record (the reads need them); the reads run
  # for DURATION_S.
  [ "$phase" = run ] && cap=(--operations 100000000 --duration-s "$duration_s")
  before=$(cpu_ticks "$@")
  json=$("$markab" bench --target "markab://$meta" --table usertable --workload c \
    --phase "$phase" --records "$records" "${cap[@]}" \
    --connections "$connections" --in-flight 4 --quiet | sed -n 's/^BENCH_JSON //p' | tail -1)
  after=$(cpu_ticks "$@")
  python3 -c 'import json, sys; j = json.loads(sys.argv[1]); j.update(shards=int(sys.argv[2]), phase_name=sys.argv[3], server_cpu_s=(int(sys.argv[5]) - int(sys.argv[4])) / int(sys.argv[6])); print(json.dumps(j))' \
    "$json" "$shards" "$name" "$before" "$after" "$ticks_per_s" >>"$out/runs.jsonl"
}

echo "cores: $(nproc); $nodes node(s), $replicas replica(s), shards per node: $shard_counts"
for shards in $shard_counts; do
  dir="$out/onebox-$shards"
  "$markab" onebox --dir "$dir" --nodes "$nodes" --shards "$shards" --table usertable \
    --partitions 64 --replicas "$replicas" >"$out/onebox-$shards.out" 2>&1 &
  onebox_pid=$!
  for _ in $(seq 1200); do
    grep -q "markab onebox ready" "$out/onebox-$shards.out" && break
    sleep 0.1
  done
  grep -q "markab onebox ready" "$out/onebox-$shards.out" ||
    { cat "$out/onebox-$shards.out" >&2; echo "onebox did not start" >&2; exit 1; }
  meta=$(grep -o "meta=[0-9.:]*" "$out/onebox-$shards.out" | cut -d= -f2)
  server_pids=$(children "$onebox_pid")
  connections=$((8 * shards))
  echo "== $shards shard(s) per node: load, then YCSB-C ($connections connections x 4)"
  measure insert load "$connections" "$shards" $server_pids
  measure read run "$connections" "$shards" $server_pids
  stop_onebox
  rm -rf "$dir"
done

python3 - "$out/runs.jsonl" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
base = {}
print()
print("| shards per node | phase | ops/s | vs 1 shard | p99 µs | server CPU µs per op | errors |")
print("|---:|---|---:|---:|---:|---:|---:|")
for run in runs:
    ops = run["overall"]["ops_per_s"]
    count = max(run["overall"]["count"], 1)
    base.setdefault(run["phase_name"], ops)
    errors = sum(run["overall"]["errors"].values())
    print(f"| {run['shards']} | {run['phase_name']} | {ops:,.0f} | {ops / base[run['phase_name']]:.2f} "
          f"| {run['overall']['response_us']['p99']:,} | {run['server_cpu_s'] * 1e6 / count:.1f} | {errors} |")
PY
