#!/usr/bin/env bash
# Where a node's CPU goes: flame graphs of
#   read   — one standalone node (one shard, pinned to cpu 0) serving YCSB-C
#            (whole-record reads of 10 × 100-byte fields) from `markab bench`
#            pinned to cpu 1;
#   insert — the three nodes of a onebox (three replicas per partition)
#            under the load phase (durable inserts of whole records).
# perf samples the node processes (`perf record --call-graph dwarf`, the
# software clock: this VM has no hardware counters); inferno folds the
# stacks and draws the SVG. Also prints the nodes' CPU µs per operation
# over the sampled window, against the run's average rate (perf's own
# overhead included, so higher than benches/read_ab.sh's and
# benches/compare.sh's figures).
#
#   benches/profile.sh [OUT_DIR] [RECORDS] [SECONDS]
#       OUT_DIR default docs/flamegraphs; writes read-node.svg and
#       insert-3-replicas.svg, and the folded stacks beside them
#       (*.folded; not committed) for scripted breakdowns
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
out=$(realpath -m "${1:-docs/flamegraphs}")
records=${2:-20000}
seconds=${3:-6}
readonly INFERNO_VERSION=0.12.3
tools=/var/tmp/markab-tools

scripts/setup.sh >/dev/null
source scripts/env.sh
command -v perf >/dev/null || { echo "perf missing (Debian: linux-perf)" >&2; exit 1; }
if [ ! -x "$tools/bin/inferno-flamegraph" ]; then
  echo "== installing inferno $INFERNO_VERSION into $tools"
  cargo install --quiet --locked inferno --version "$INFERNO_VERSION" --root "$tools"
fi
markab=$(markab_binary)
mkdir -p "$out"
work=$(mktemp -d /var/tmp/markab-profile.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# NAME PIDS...: samples the given processes for SECONDS into NAME.data.
sample() {
  local name=$1
  shift
  local list
  list=$(echo "$@" | tr ' ' ',')
  perf record -q -F 499 --call-graph dwarf,16384 -p "$list" -o "$work/$name.data" \
    -- sleep "$seconds" >/dev/null 2>&1
}

# NAME TITLE: folds NAME.data's stacks and draws NAME.svg.
draw() {
  local name=$1 title=$2
  perf script -i "$work/$name.data" 2>/dev/null |
    "$tools/bin/inferno-collapse-perf" >"$out/$name.folded"
  "$tools/bin/inferno-flamegraph" --title "$title" --minwidth 0.2 \
    <"$out/$name.folded" >"$out/$name.svg"
  echo "   wrote $out/$name.svg"
}

# BEFORE AFTER OPS: CPU µs per operation from two cpu_ticks readings over
# OPS operations.
per_op() {
  local before=$1 after=$2 ops=$3
  echo "$(((after - before) * 1000000 / $(getconf CLK_TCK) / ops))"
}

echo "== read: one standalone node (1 shard, cpu 0), YCSB-C from cpu 1"
start_standalone_node "$markab" "$work/node" 1 0
pids+=("$node_pid")
taskset -c 1 "$markab" bench --target "markab-node://$node_address" --workload c \
  --records "$records" --phase load --quiet >/dev/null
taskset -c 1 "$markab" bench --target "markab-node://$node_address" --workload c \
  --records "$records" --phase run --operations 100000000 --duration-s $((seconds + 4)) \
  --json "$work/read.json" --quiet >/dev/null &
bench=$!
sleep 2
before=$(cpu_ticks "$node_pid")
sample read-node "$node_pid"
after=$(cpu_ticks "$node_pid")
wait "$bench"
draw read-node "A node serving YCSB-C: one shard, whole-record reads"
ops_per_s=$(grep -o '"throughput_ops_s":[0-9.]*' "$work/read.json" | tail -1 | cut -d: -f2)
echo "   ${ops_per_s%.*} reads/s; node CPU $(per_op "$before" "$after" $((${ops_per_s%.*} * seconds))) µs per read while sampled"
kill -TERM "${pids[0]}" 2>/dev/null || true
wait "${pids[0]}" 2>/dev/null || true
pids=()

echo "== insert: a onebox of three nodes, three replicas per partition, load phase"
"$markab" onebox --dir "$work/onebox" --nodes 3 --partitions 8 >"$work/onebox.out" 2>&1 &
pids+=($!)
for _ in $(seq 600); do grep -q "markab onebox ready" "$work/onebox.out" && break; sleep 0.1; done
meta=$(grep -o "meta=[0-9.:]*" "$work/onebox.out" | cut -d= -f2)
[ -n "$meta" ] || { cat "$work/onebox.out" >&2; exit 1; }
nodes=$(for pid in $(children "${pids[0]}"); do
  grep -q "replica" "/proc/$pid/cmdline" 2>/dev/null && echo -n "$pid "
done)
"$markab" bench --target "markab://$meta" --workload a --records $((8000 * (seconds + 4))) \
  --phase load --json "$work/insert.json" --quiet >/dev/null &
bench=$!
sleep 2
# shellcheck disable=SC2086
before=$(cpu_ticks $nodes)
# shellcheck disable=SC2086
sample insert-3-replicas $nodes
# shellcheck disable=SC2086
after=$(cpu_ticks $nodes)
wait "$bench"
draw insert-3-replicas "Three nodes under durable inserts, three replicas per partition"
ops_per_s=$(grep -o '"throughput_ops_s":[0-9.]*' "$work/insert.json" | tail -1 | cut -d: -f2)
echo "   ${ops_per_s%.*} inserts/s; CPU of the three nodes $(per_op "$before" "$after" $((${ops_per_s%.*} * seconds))) µs per insert while sampled"
