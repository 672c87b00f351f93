# Shared by the bench scripts (sourced, never run): reading processes' CPU
# time and children from /proc.

# CPU time (user + system, all threads) the given processes have used, in
# clock ticks (getconf CLK_TCK per second); a process that is gone counts 0.
cpu_ticks() {
  local total=0 pid stat fields
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    # Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    read -ra fields <<<"${stat##*) }"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# The pids of PID's child processes, from /proc.
children() {
  local stat fields
  for stat in /proc/[0-9]*/stat; do
    fields=$(cat "$stat" 2>/dev/null) || continue
    read -ra fields <<<"${fields##*) }"
    [ "${fields[1]}" = "$1" ] && { stat=${stat#/proc/}; echo -n "${stat%/stat} "; }
  done
  echo
}

# The markab binary the bench scripts run: $MARKAB_BIN when set (a prebuilt
# binary), else this checkout's release build, built first.
markab_binary() {
  if [ -n "${MARKAB_BIN:-}" ]; then
    echo "$MARKAB_BIN"
  else
    cargo build --release --quiet >&2
    echo "$CARGO_TARGET_DIR/release/markab"
  fi
}

# BINARY WORK SHARDS [CPU]: starts one standalone markab node from BINARY in
# directory WORK (table `temp`, 8 partitions, SHARDS shards; pinned to cpu
# CPU with taskset when given) and waits for its ready line. Sets node_pid
# (the node's own pid) and node_address; fails when it does not start.
start_standalone_node() {
  local binary=$1 work=$2 shards=$3 cpu=${4:-}
  local pin=()
  [ -n "$cpu" ] && pin=(taskset -c "$cpu")
  mkdir -p "$work/tuning"
  : >"$work/tuning/default.toml"
  cat >"$work/node.toml" <<EOF
[node]
data_dir = "$work/data"
host = "127.0.0.1"
port_base = 0
shards = $shards
pin = false
tuning_dir = "tuning"

[[table]]
name = "temp"
app_id = 1
partition_count = 8
EOF
  # exec: the node keeps the subshell's pid.
  (cd "$work" && exec "${pin[@]}" "$binary" replica --config node.toml >"$work/node.out" 2>&1) &
  node_pid=$!
  for _ in $(seq 300); do grep -q "markab replica ready" "$work/node.out" && break; sleep 0.1; done
  node_address=$(grep -o "at [0-9.:]*" "$work/node.out" | cut -d' ' -f2)
  [ -n "$node_address" ] || { cat "$work/node.out" >&2; echo "the node did not start" >&2; return 1; }
}
