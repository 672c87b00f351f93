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
