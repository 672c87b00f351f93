#!/usr/bin/env bash
# Side-by-side YCSB numbers on this machine: a Markab onebox cluster against
# redis-server (appendfsync always) and a single etcd (fsync'd WAL, its
# default), all on 127.0.0.1, with the same driver (`markab bench`), the same
# workload and the same concurrency. Starts every server itself, stops them
# by pid, and prints a table of ratios.
#
#   benches/compare.sh [RECORDS] [OPERATIONS] [CONNECTIONS] [IN_FLIGHT]
#   MARKAB_BIN=/path/to/markab benches/compare.sh    # another build of markab
#   MODE=single benches/compare.sh    # one standalone node (one shard per
#                                     # core, one replica) instead of the onebox
#
# Also the driver's own CPU per operation (`markab bench`, which shares the
# machine's cores with the servers).
#
# Reads: YCSB-C (100 % reads) throughput and p99. Writes: the load phase
# (100 % inserts, durable: Markab fsyncs its log, Redis uses appendfsync
# always, etcd fsyncs its raft WAL before acknowledging).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
records=${1:-20000}
operations=${2:-100000}
connections=${3:-8}
in_flight=${4:-4}

scripts/setup.sh
source scripts/env.sh
# MARKAB_BIN runs another build of markab (e.g. one saved before a change,
# to compare server CPU per operation before and after it).
if [ -n "${MARKAB_BIN:-}" ]; then
  markab="$MARKAB_BIN"
else
  cargo build --release --bin markab >/dev/null 2>&1
  markab="$CARGO_TARGET_DIR/release/markab"
fi
command -v redis-server >/dev/null || { echo "redis-server missing: run scripts/setup.sh" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd missing: run scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d /var/tmp/markab-compare.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

mode=${MODE:-cluster}
case "$mode" in
  cluster)
    echo "== starting a Markab onebox (3 nodes) in $work/onebox"
    "$markab" onebox --dir "$work/onebox" --nodes 3 --partitions 8 >"$work/onebox.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do grep -q "markab onebox ready" "$work/onebox.out" && break; sleep 0.1; done
    meta=$(grep -o "meta=[0-9.:]*" "$work/onebox.out" | cut -d= -f2)
    [ -n "$meta" ] || { cat "$work/onebox.out" >&2; echo "onebox did not start" >&2; exit 1; }
    markab_target="markab://$meta"
    ;;
  single)
    # One standalone node, one shard per core, one copy of each partition;
    # its mutation log is fsync'd before a write is acknowledged, like
    # Redis's appendfsync always.
    shards=$(nproc)
    echo "== starting one standalone Markab node ($shards shard(s), one replica) in $work/node"
    start_standalone_node "$markab" "$work/node" "$shards"
    pids+=("$node_pid")
    markab_target="markab-node://$node_address"
    ;;
  *) echo "MODE=$mode: expected cluster or single" >&2; exit 2 ;;
esac

echo "== starting redis-server (appendfsync always)"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save "" \
  --appendonly yes --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "== starting a single etcd in $work/etcd"
etcd_port=$(free_port)
etcd_peer_port=$(free_port)
etcd --name compare --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "compare=http://127.0.0.1:$etcd_peer_port" >"$work/etcd.log" 2>&1 &
pids+=($!)
etcd_ready=
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"' && { etcd_ready=1; break; }
  sleep 0.1
done
[ -n "$etcd_ready" ] || { cat "$work/etcd.log" >&2; echo "etcd did not start" >&2; exit 1; }

ticks_per_s=$(getconf CLK_TCK)

# TARGET WORKLOAD PHASE SERVER_PID... -> the BENCH_JSON line, with the CPU the
# server processes used during the run added as "server_cpu_s", and the
# driver's own (`markab bench`: user + system, from the shell's `times`
# of its children) as "driver_cpu_s".
run() {
  local target=$1 workload=$2 phase=$3
  shift 3
  local before after raw json
  before=$(cpu_ticks "$@")
  # The subshell's `times` prints its children's CPU (the bench) last.
  raw=$("$markab" bench --target "$target" --table temp --workload "$workload" --phase "$phase" --quiet \
    --records "$records" --operations "$operations" \
    --connections "$connections" --in-flight "$in_flight"; times)
  after=$(cpu_ticks "$@")
  json=$(sed -n 's/^BENCH_JSON //p' <<<"$raw" | tail -1)
  python3 -c '
import json, re, sys
j = json.loads(sys.argv[1])
j["server_cpu_s"] = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
seconds = lambda t: sum(float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", t))
j["driver_cpu_s"] = seconds(sys.argv[5])
print(json.dumps(j))' "$json" "$before" "$after" "$ticks_per_s" "$(tail -1 <<<"$raw")"
}

# Markab's servers: the onebox's meta and node processes, or the one node.
if [ "$mode" = cluster ]; then
  markab_pids=$(pgrep -P "${pids[0]}" | tr '\n' ' ')
else
  markab_pids=${pids[0]}
fi
redis_pid=${pids[1]}
etcd_pid=${pids[2]}

echo "== load (writes) and YCSB-C (reads): $records records, $operations operations, $connections x $in_flight"
markab_load=$(run "$markab_target" c load $markab_pids)
markab_read=$(run "$markab_target" c run $markab_pids)
redis_load=$(run "redis://127.0.0.1:$redis_port" c load "$redis_pid")
redis_read=$(run "redis://127.0.0.1:$redis_port" c run "$redis_pid")
etcd_load=$(run "etcd://127.0.0.1:$etcd_port" c load "$etcd_pid")
etcd_read=$(run "etcd://127.0.0.1:$etcd_port" c run "$etcd_pid")

python3 - "$markab_load" "$markab_read" "$redis_load" "$redis_read" "$etcd_load" "$etcd_read" <<'PY'
import json, sys
markab_load, markab_read, redis_load, redis_read, etcd_load, etcd_read = (
    json.loads(a) for a in sys.argv[1:7])
def row(name, key, m, r, e):
    mv, rv, ev = key(m), key(r), key(e)
    print(f"| {name} | {mv:,.0f} | {rv:,.0f} | {ev:,.0f} | {mv / rv:.2f} | {mv / ev:.2f} |")
ops = lambda j: j["overall"]["ops_per_s"]
p99 = lambda j: j["overall"]["response_us"]["p99"]
errors = lambda j: sum(j["overall"]["errors"].values())
print()
print("| measure | markab | redis | etcd | markab / redis | markab / etcd |")
print("|---|---:|---:|---:|---:|---:|")
row("YCSB-C read ops/s", ops, markab_read, redis_read, etcd_read)
row("YCSB-C read p99 µs (lower is better)", p99, markab_read, redis_read, etcd_read)
row("durable insert ops/s (load phase)", ops, markab_load, redis_load, etcd_load)
row("durable insert p99 µs (lower is better)", p99, markab_load, redis_load, etcd_load)
cpu_us = lambda j: j["server_cpu_s"] * 1e6 / max(j["overall"]["count"], 1)
row("server CPU µs per read (lower is better)", cpu_us, markab_read, redis_read, etcd_read)
row("server CPU µs per insert (lower is better)", cpu_us, markab_load, redis_load, etcd_load)
driver_us = lambda j: j["driver_cpu_s"] * 1e6 / max(j["overall"]["count"], 1)
row("driver CPU µs per read (markab bench)", driver_us, markab_read, redis_read, etcd_read)
row("driver CPU µs per insert (markab bench)", driver_us, markab_load, redis_load, etcd_load)
print()
print(f"errors: markab load {errors(markab_load)}, read {errors(markab_read)}; "
      f"redis load {errors(redis_load)}, read {errors(redis_read)}; "
      f"etcd load {errors(etcd_load)}, read {errors(etcd_read)}")
print("replicas per Markab partition:", markab_read["environment"].get("replicas", "?"))
PY
