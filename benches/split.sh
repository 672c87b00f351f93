#!/usr/bin/env bash
# Online partition split under a YCSB load (docs/split.md): a onebox of 3
# nodes (2 shards each) holds a table of 8 partitions × 3 replicas loaded
# with RECORDS pegasus records (500 B each: 2,000,000 ≈ 1.1 GiB per
# replica set). A YCSB-A run (workload pegasus) at RATE ops/s for
# DURATION s is measured undisturbed, then again while the table splits
# 8 → 16 (started 2 s into the run), then again at 16. Prints how long the
# split took from `partition_split start` to the commit, and each run's
# throughput, p99s and errors; the runs' JSON lines are in OUT/runs.jsonl.
#
#   benches/split.sh [RECORDS] [RATE] [DURATION_S] [OUT]
#   MARKAB_BIN=/path/to/markab benches/split.sh    # a prebuilt binary
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-2000000}
rate=${2:-2000}
duration_s=${3:-30}
out=${4:-/var/tmp/markab-split}
source scripts/env.sh
source benches/lib.sh
markab=$(markab_binary)
rm -rf "$out"
mkdir -p "$out"
onebox_pid=
stop_onebox() {
  [ -n "$onebox_pid" ] && kill -TERM "$onebox_pid" 2>/dev/null && wait "$onebox_pid" || true
  onebox_pid=
}
trap stop_onebox EXIT

"$markab" onebox --dir "$out/onebox" --nodes 3 --shards 2 --table usertable \
  --partitions 8 --replicas 3 >"$out/onebox.out" 2>&1 &
onebox_pid=$!
for _ in $(seq 1200); do
  grep -q "markab onebox ready" "$out/onebox.out" && break
  sleep 0.1
done
grep -q "markab onebox ready" "$out/onebox.out" || {
  echo "onebox did not start; see $out/onebox.out" >&2
  exit 1
}
meta=$(grep -o "meta=[0-9.:]*" "$out/onebox.out" | cut -d= -f2)
shell() { "$markab" shell --meta "$meta" -e "$1"; }
bench_run() {
  "$markab" bench --target "markab://$meta" --table usertable --workload pegasus \
    --records "$records" --phase run --operations $((rate * duration_s)) \
    --target-rate "$rate" --duration-s "$duration_s" --quiet --json "$out/runs.jsonl" \
    >"$out/$1.txt"
}

echo "== loading $records records"
"$markab" bench --target "markab://$meta" --table usertable --workload pegasus \
  --records "$records" --phase load --connections 16 --quiet >"$out/load.txt"
du -sh "$out/onebox" | sed 's/^/data on disk (3 replicas): /'
echo "== undisturbed run (8 partitions)"
bench_run undisturbed
echo "== the same run while the table splits 8 -> 16"
bench_run splitting &
bench_pid=$!
sleep 2
started=$(date +%s.%N)
shell 'partition_split start usertable 16' >"$out/split-start.txt"
# Bounded: a split not committed within WAIT_MAX_S seconds (default 600)
# is reported with its progress.
wait_max_s=${WAIT_MAX_S:-600}
until shell 'partition_split query usertable' | grep -q '^split *: none$'; do
  sleep 0.05
  if [ "$(awk "BEGIN { print ($(date +%s.%N) - $started > $wait_max_s) }")" = 1 ]; then
    echo "the split did not commit within $wait_max_s s:"
    shell 'partition_split query usertable'
    wait "$bench_pid"
    exit 1
  fi
done
finished=$(date +%s.%N)
wait "$bench_pid"
echo "split 8 -> 16 committed $(awk "BEGIN { printf \"%.2f\", $finished - $started }") s after its start"
echo "== the same run after the split (16 partitions)"
bench_run after
python3 - "$out/runs.jsonl" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
for name, run in zip(["undisturbed", "splitting", "after"], runs):
    ops = run["operations"]
    p99 = {op: ops[op]["response_us"]["p99"] for op in ops}
    top = {op: ops[op]["response_us"]["max"] for op in ops}
    errors = run["overall"]["errors"]
    print(f"{name}: {run['throughput_ops_s']:.0f} ops/s, response p99 us {p99}, max us {top}, errors {errors}")
PY
