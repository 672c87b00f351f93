#!/usr/bin/env bash
# Server CPU per operation of two builds of markab, A and B, measured the way
# benches/compare.sh measures it (a 3-node onebox, `markab bench` load phase
# then YCSB-C, the CPU time of meta and every node from /proc), alternating
# A, B, A, B, ... ROUNDS times so that a shared machine's noise falls on both,
# then the median of each. For "must not get worse" checks of a change: save
# the binary before it, build after it, compare.
#
#   benches/cpu_ab.sh A_BINARY B_BINARY [ROUNDS] [RECORDS] [OPERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
a=${1:?the first markab binary}
b=${2:?the second markab binary}
rounds=${3:-5}
records=${4:-20000}
operations=${5:-100000}
ticks_per_s=$(getconf CLK_TCK)


# BINARY -> "cpu_us_per_insert cpu_us_per_read" of one onebox run.
measure() {
  local markab=$1 work pid meta servers before after inserts reads
  work=$(mktemp -d /var/tmp/markab-cpu-ab.XXXXXX)
  "$markab" onebox --dir "$work/onebox" --nodes 3 --partitions 8 >"$work/onebox.out" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q "markab onebox ready" "$work/onebox.out" && break; sleep 0.1; done
  meta=$(grep -o "meta=[0-9.:]*" "$work/onebox.out" | cut -d= -f2)
  servers=$(pgrep -P "$pid" | tr '\n' ' ')
  phase() {
    before=$(cpu_ticks $servers)
    "$markab" bench --target "markab://$meta" --table temp --workload c --phase "$1" --quiet \
      --records "$records" --operations "$operations" --connections 8 --in-flight 4 >/dev/null
    after=$(cpu_ticks $servers)
    echo $(( (after - before) * 1000000 / ticks_per_s ))
  }
  inserts=$(phase load)
  reads=$(phase run)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
  echo "$((inserts / records)) $((reads / operations))"
}

results_a=()
results_b=()
for round in $(seq "$rounds"); do
  results_a+=("$(measure "$a")")
  results_b+=("$(measure "$b")")
  echo "round $round: A ${results_a[-1]}  B ${results_b[-1]}  (µs per insert, µs per read)"
done
python3 - "${results_a[@]}" -- "${results_b[@]}" <<'PY'
import statistics, sys
args = sys.argv[1:]
split = args.index("--")
a = [tuple(map(int, r.split())) for r in args[:split]]
b = [tuple(map(int, r.split())) for r in args[split + 1:]]
for name, index in (("insert", 0), ("read", 1)):
    ma = statistics.median(r[index] for r in a)
    mb = statistics.median(r[index] for r in b)
    print(f"server CPU µs per {name}: A {ma:.0f}, B {mb:.0f}, B/A {mb / ma:.3f}")
PY
