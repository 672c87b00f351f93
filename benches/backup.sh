#!/usr/bin/env bash
# Cold backup and restore throughput (docs/backup.md): a onebox of 3 nodes
# (2 shards each) holds a table of 32 partitions × 3 replicas loaded with
# RECORDS pegasus records (500 B each: 2,000,000 ≈ 1 GiB); the table is
# backed up to a directory and to a local S3 server (moto, started here on
# loopback and killed by pid), each backup restored as a new table; then a
# YCSB-A run at RATE ops/s for DURATION s is measured undisturbed, and again
# while a backup to the directory runs at the nodes' default upload rate
# limit, and undisturbed again. Prints each backup's and restore's bytes,
# time and MB/s, and the runs' p99s; their JSON lines are in OUT/runs.jsonl. With LOADED=DIR
# set, the loaded onebox is saved to DIR after loading, and a later run with
# the same RECORDS starts from that copy instead of loading again.
# UPLOAD_RATE=BYTES sets the nodes' `backup_upload_bytes_per_second` (their
# default is 8 MiB/s; 0 = unlimited).
#
#   benches/backup.sh [RECORDS] [RATE] [DURATION_S] [OUT]
#   MARKAB_BIN=/path/to/markab benches/backup.sh    # a prebuilt binary
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
records=${1:-2000000}
rate=${2:-2000}
duration_s=${3:-60}
out=${4:-/var/tmp/markab-backup-bench}
source scripts/env.sh
source benches/lib.sh
markab=$(markab_binary)
[ -x "$root/.moto-venv/bin/moto_server" ] || bash scripts/setup.sh
rm -rf "$out"
mkdir -p "$out/backups"
# moto accepts any credentials; meta and the nodes read them from here.
export AWS_ACCESS_KEY_ID=markab-bench AWS_SECRET_ACCESS_KEY=markab-bench
onebox_pid=
moto_pid=

start_onebox() {
  "$markab" onebox --dir "$out/onebox" --nodes 3 --shards 2 --table usertable \
    --partitions 32 --replicas 3 >"$out/onebox.out" 2>&1 &
  onebox_pid=$!
  for _ in $(seq 1200); do
    grep -q "markab onebox ready" "$out/onebox.out" && return
    sleep 0.1
  done
  echo "onebox did not start; see $out/onebox.out" >&2
  exit 1
}
stop_all() {
  [ -n "$onebox_pid" ] && kill -TERM "$onebox_pid" 2>/dev/null && wait "$onebox_pid" || true
  onebox_pid=
  [ -n "$moto_pid" ] && kill -TERM "$moto_pid" 2>/dev/null && wait "$moto_pid" || true
  moto_pid=
}
trap stop_all EXIT

shell() { "$markab" shell --meta "$meta" -e "$1"; }
field() { awk -v key="$1" '$1 == key && $2 == ":" { print $3 }'; }
now() { date +%s.%N; }

loaded=${LOADED:-}
if [ -n "$loaded" ] && [ -f "$loaded/records-$records" ]; then
  echo "== copying the onebox loaded with $records records from $loaded"
  cp -a "$loaded/onebox" "$out/onebox"
  sed -i "s#$(cat "$loaded/saved-from")/#$out/#g" "$out"/onebox/*.toml
  start_onebox
  meta=$(grep -o "meta=[0-9.:]*" "$out/onebox.out" | cut -d= -f2)
else
  start_onebox
  meta=$(grep -o "meta=[0-9.:]*" "$out/onebox.out" | cut -d= -f2)
  echo "== loading $records records"
  "$markab" bench --target "markab://$meta" --table usertable --workload pegasus \
    --records "$records" --phase load --connections 16 --quiet >"$out/load.txt"
  if [ -n "$loaded" ]; then
    stop_all
    rm -rf "$loaded"
    mkdir -p "$loaded"
    cp -a "$out/onebox" "$loaded/onebox"
    echo "$out" >"$loaded/saved-from"
    touch "$loaded/records-$records"
    start_onebox
    meta=$(grep -o "meta=[0-9.:]*" "$out/onebox.out" | cut -d= -f2)
  fi
fi
du -sh "$out/onebox" | sed 's/^/data on disk (3 replicas): /'
if [ -n "${UPLOAD_RATE:-}" ]; then
  stop_all
  sed -i "s/^\[node\]$/[node]\nbackup_upload_bytes_per_second = $UPLOAD_RATE/" "$out"/onebox/node-*.toml
  start_onebox
  meta=$(grep -o "meta=[0-9.:]*" "$out/onebox.out" | cut -d= -f2)
fi

# A onebox restarted from a copy keeps its primaries where they were (all on
# one node, as loaded): balancing rounds spread them, so that every node
# uploads its share. Bounded; settled once nothing moves, nothing is
# planned and the nodes' primary counts are within one of each other.
settled() {
  shell 'moves' | grep -q '^moves *: 0$' && shell 'balance -n' | grep -q '^moves *: 0$' &&
    shell 'nodes' | awk '$2 == "ALIVE" { p[NR] = $4 }
      END { for (i in p) for (j in p) if (p[i] - p[j] > 1) exit 1 }'
}
for _ in $(seq 600); do
  settled && break
  shell 'balance' >/dev/null || true
  sleep 1
done
shell 'nodes' >"$out/nodes.txt"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$root/.moto-venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$out/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$port/" >/dev/null && break
  sleep 0.1
done
curl -sf -X PUT "http://127.0.0.1:$port/markab-bench" >/dev/null

# Backs usertable up to $2 and waits; prints "$1 bytes seconds".
backup() {
  local started id status
  started=$(now)
  id=$(shell "backup usertable --to $2" | field backup_id)
  while :; do
    status=$(shell "query_backup $id" | field status)
    [ "$status" != running ] && break
    sleep 0.5
  done
  [ "$status" = complete ] || { echo "backup $id to $2: $status" >&2; shell "query_backup $id" >&2; exit 1; }
  local seconds bytes
  seconds=$(awk "BEGIN { print $(now) - $started }")
  bytes=$(shell "query_backup $id" | grep -o 'bytes=[0-9]*' | cut -d= -f2 | awk '{ s += $1 } END { print s }')
  echo "$id $bytes $seconds"
}
# Restores backup $2 at $3 as table $1 and waits until it serves; prints
# "seconds".
restore() {
  local started status
  started=$(now)
  shell "restore --from $3 --backup-id $2 --table usertable --as $1" >/dev/null
  while :; do
    status=$(shell "query_restore_status $1" | field status)
    [ "$status" != restoring ] && break
    sleep 0.5
  done
  [ "$status" = serving ] || { echo "restore of $1: $status" >&2; exit 1; }
  awk "BEGIN { print $(now) - $started }"
}
mbs() { awk "BEGIN { printf \"%.1f\", $1 / 1048576 / $2 }"; }

dir_url="file://$out/backups"
s3_url="s3://markab-bench/b?endpoint=http://127.0.0.1:$port&region=us-east-1"
bench_run() {
  "$markab" bench --target "markab://$meta" --table usertable --workload pegasus \
    --records "$records" --phase run --operations $((rate * duration_s)) \
    --target-rate "$rate" --duration-s "$duration_s" --quiet --json "$out/runs.jsonl" \
    >"$out/$1.txt"
}
echo "== warm-up run (not counted)"
"$markab" bench --target "markab://$meta" --table usertable --workload pegasus \
  --records "$records" --phase run --operations $((rate * 20)) --target-rate "$rate" \
  --duration-s 20 --quiet >"$out/warm-up.txt"
echo "== undisturbed run"
bench_run undisturbed
echo "== the same run while backups to the directory run back to back (upload rate: ${UPLOAD_RATE:-the default})"
bench_run during-backup &
bench_pid=$!
taken=0
while kill -0 "$bench_pid" 2>/dev/null; do
  read -r id bytes seconds < <(backup directory "$dir_url")
  taken=$((taken + 1))
  echo "backup $taken during the run: $bytes bytes in ${seconds} s: $(mbs "$bytes" "$seconds") MB/s"
done
wait "$bench_pid"
echo "== undisturbed again (the runs drift as the page cache warms: the ratio is against both)"
bench_run undisturbed-again
python3 - "$out/runs.jsonl" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
names = ["undisturbed", "during backup", "undisturbed again"]
for name, run in zip(names, runs):
    ops = run["operations"]
    p99 = {op: ops[op]["response_us"]["p99"] for op in ops}
    errors = run["overall"]["errors"]
    print(f"{name}: {run['throughput_ops_s']:.0f} ops/s, response p99 us {p99}, errors {errors}")
if len(runs) == 3:
    for op in runs[0]["operations"]:
        before = [runs[i]["operations"][op]["response_us"]["p99"] for i in (0, 2)]
        during = runs[1]["operations"].get(op, {}).get("response_us", {}).get("p99")
        if during:
            print(f"{op} p99 during / undisturbed: {during / max(before):.2f} to {during / min(before):.2f}")
PY

echo "== backup and restore throughput"
for target in directory s3; do
  url=$dir_url
  [ "$target" = s3 ] && url=$s3_url
  read -r id bytes seconds < <(backup "$target" "$url")
  echo "backup to $target: $bytes bytes in ${seconds} s: $(mbs "$bytes" "$seconds") MB/s"
  seconds=$(restore "restored_$target" "$id" "$url")
  echo "restore from $target (every partition installed, table serving): ${seconds} s: $(mbs "$bytes" "$seconds") MB/s"
  shell "drop restored_$target" >/dev/null
done

