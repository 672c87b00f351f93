#!/usr/bin/env bash
# A node's CPU per YCSB-C read, for two builds of markab: one standalone
# node (one shard, pinned to cpu 0) loaded with RECORDS records, then
# OPERATIONS reads from `markab bench` pinned to cpu 1; the node's CPU time
# (user + system, from /proc) over the reads, in ns per read: finer than
# benches/cpu_ab.sh's whole microseconds. Alternates A, B ROUNDS times.
#
#   benches/read_ab.sh A_BINARY B_BINARY [ROUNDS] [RECORDS] [OPERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
a=${1:?the first markab binary}
b=${2:?the second markab binary}
rounds=${3:-3}
records=${4:-20000}
operations=${5:-600000}
ticks_per_s=$(getconf CLK_TCK)

# BINARY -> node CPU ns per read.
measure() {
  local markab=$1 work before after
  work=$(mktemp -d /var/tmp/markab-read-ab.XXXXXX)
  start_standalone_node "$markab" "$work" 1 0
  taskset -c 1 "$markab" bench --target "markab-node://$node_address" --workload c \
    --records "$records" --phase load --quiet >/dev/null
  before=$(cpu_ticks "$node_pid")
  taskset -c 1 "$markab" bench --target "markab-node://$node_address" --workload c \
    --records "$records" --phase run --operations "$operations" --quiet >/dev/null
  after=$(cpu_ticks "$node_pid")
  kill -TERM "$node_pid" 2>/dev/null || true
  wait "$node_pid" 2>/dev/null || true
  rm -rf "$work"
  echo $(((after - before) * 1000000000 / ticks_per_s / operations))
}

for round in $(seq "$rounds"); do
  echo "round $round: A $(measure "$a") ns  B $(measure "$b") ns per read"
done
