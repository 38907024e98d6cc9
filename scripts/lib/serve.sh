# Shared by the benchmark scripts (sourced, not run): start a `sesame serve` for a benchmark and
# wait until it can answer Score.

# start_bench_server BIN PORT DIR [ENV=VALUE ...]: starts BIN serve on 127.0.0.1:PORT in the
# background with its audit files and log in DIR, the metrics listener and file watcher off.
# The new server's pid is in $! afterwards.
start_bench_server() {
  local bin=$1 port=$2 dir=$3
  shift 3
  mkdir -p "$dir"
  env SESAME_LISTEN="127.0.0.1:$port" SESAME_METRICS_LISTEN= SESAME_WATCH_INTERVAL_SECS=0 \
    SESAME_AUDIT_PATH="$dir/audit.db" "$@" "$bin" serve > "$dir/log" 2>&1 &
}

# wait_until_scoring CLIENT PORT PID DIR NAME: returns once the server answers Score without an
# error (Ping answers before the model and the demo population are loaded; Score is UNAVAILABLE
# until then). Exits the script if the server died or did not answer within 120 s.
wait_until_scoring() {
  local client=$1 port=$2 pid=$3 dir=$4 name=$5
  for _ in $(seq 1 120); do
    if "$client" bench --addr "http://127.0.0.1:$port" --rpc score --seconds 0.2 \
         --connections 1 --inflight 1 --user U0004ecbcf3e8 2>/dev/null | grep -q ', 0 errors'; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "$name exited:" >&2; tail -5 "$dir/log" >&2; exit 1; }
    sleep 1
  done
  echo "$name did not answer within 120 s" >&2
  exit 1
}
