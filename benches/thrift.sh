#!/usr/bin/env bash
# Pegasus's client protocol (THFT) against Markab's own, on the same onebox
# cluster with the same driver and concurrency: `markab bench` through
# `markab://META` and through `pegasus://META`, alternating, ROUNDS times.
# Each round loads RECORDS records of one FIELD_BYTES field (sets: one
# durable three-replica write each) and then reads OPERATIONS of them at
# random (YCSB-C; a whole-record read of one field). Prints ops/s, p99 and
# server CPU per operation (meta and the three nodes, from /proc) for each.
#
#   benches/thrift.sh [RECORDS] [OPERATIONS] [ROUNDS] [CONNECTIONS] [IN_FLIGHT] [FIELD_BYTES]
#   MARKAB_BIN=/path/to/markab benches/thrift.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
records=${1:-20000}
operations=${2:-200000}
rounds=${3:-3}
connections=${4:-8}
in_flight=${5:-4}
field_bytes=${6:-100}

source scripts/env.sh
markab=$(markab_binary)
work=$(mktemp -d /var/tmp/markab-thrift.XXXXXX)
onebox_pid=
cleanup() {
  [ -n "$onebox_pid" ] && { kill -TERM "$onebox_pid" 2>/dev/null || true; wait "$onebox_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting a Markab onebox (3 nodes, 8 partitions x 3 replicas) in $work/onebox"
"$markab" onebox --dir "$work/onebox" --nodes 3 --partitions 8 >"$work/onebox.out" 2>&1 &
onebox_pid=$!
for _ in $(seq 600); do grep -q "markab onebox ready" "$work/onebox.out" && break; sleep 0.1; done
meta=$(grep -o "meta=[0-9.:]*" "$work/onebox.out" | cut -d= -f2)
[ -n "$meta" ] || { cat "$work/onebox.out" >&2; echo "onebox did not start" >&2; exit 1; }
server_pids=$(pgrep -P "$onebox_pid" | tr '\n' ' ')
ticks_per_s=$(getconf CLK_TCK)

# TARGET PHASE -> "ops/s p99_us server_cpu_us_per_op errors"
run() {
  local target=$1 phase=$2 before after raw count
  before=$(cpu_ticks $server_pids)
  raw=$("$markab" bench --target "$target" --table temp --workload c --phase "$phase" --quiet \
    --records "$records" --operations "$operations" --fields 1 --field-bytes "$field_bytes" \
    --connections "$connections" --in-flight "$in_flight")
  after=$(cpu_ticks $server_pids)
  python3 -c '
import json, sys
j = json.loads(sys.argv[1])
o = j["overall"]
cpu_us = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4]) * 1e6 / max(o["count"], 1)
ops, p99, errors = o["ops_per_s"], o["response_us"]["p99"], sum(o["errors"].values())
print("%.0f %.0f %.1f %d" % (ops, p99, cpu_us, errors))' \
    "$(sed -n 's/^BENCH_JSON //p' <<<"$raw" | tail -1)" "$before" "$after" "$ticks_per_s"
}

printf '| round | protocol | set ops/s | set p99 µs | CPU µs/set | get ops/s | get p99 µs | CPU µs/get | errors |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|---:|\n'
for round in $(seq "$rounds"); do
  for protocol in markab pegasus; do
    read -r set_ops set_p99 set_cpu set_errors <<<"$(run "$protocol://$meta" load)"
    read -r get_ops get_p99 get_cpu get_errors <<<"$(run "$protocol://$meta" run)"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$round" "$protocol" \
      "$set_ops" "$set_p99" "$set_cpu" "$get_ops" "$get_p99" "$get_cpu" "$((set_errors + get_errors))"
  done
done
