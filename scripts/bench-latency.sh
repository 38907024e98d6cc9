#!/usr/bin/env bash
# Score latency against load (issue #5's "p99 at half of the maximum"): one server, the closed
# loop's maximum measured first in every round, then open-loop runs at fixed rates or at shares of
# that maximum, each with p50/p90/p99/p99.9 and the client's and server's CPU per call.
#
#   scripts/bench-latency.sh [--rounds N] [--rates "2000 5000 25% 50%"] [--seconds S]
#                            [--arrivals ticks|poisson] [--client BIN] [--server BIN] [ENV=V ...]
#
# ENV=V pairs go to the server's environment (the audit is off unless SESAME_AUDIT_ENABLED=true
# is given). The CPU per call is the figure to read beside the latency: on a host where waking a
# thread is dear (a VM exit), it rises as the load falls, so "half of the maximum" keeps the cores
# busier than half (docs/service.md, "Latency against load").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/serve.sh

rounds=3 rates="2000 5000 25% 50%" seconds=4 arrivals=ticks
client="${CARGO_TARGET_DIR:-target}/release/sesame"
server=""
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --arrivals) arrivals=$2; shift 2 ;;
    --client) client=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *=*) envs+=("$1"); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
server=${server:-$client}
for spec in $rates; do
  [[ "$spec" =~ ^[1-9][0-9]*%?$ ]] || { echo "--rates: '$spec' is neither calls/s (e.g. 5000) nor a share of the maximum (e.g. 50%)" >&2; exit 2; }
done
[ -x "$client" ] || { echo "no client binary at $client (cargo build --release)" >&2; exit 2; }
[ -x "$server" ] || { echo "no server binary at $server" >&2; exit 2; }

work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
start_bench_server "$server" "$port" "$work" SESAME_AUDIT_ENABLED=false "${envs[@]}"
pid=$!
wait_until_scoring "$client" "$port" "$pid" "$work" server
addr="http://127.0.0.1:$port"

run() { # extra bench arguments...; prints the result line
  "$client" bench --addr "$addr" --rpc score --connections 4 --inflight 64 --seconds "$seconds" \
    --user U0004ecbcf3e8 --server-pid "$pid" "$@" 2>&1 | grep -E '^score' || true
}
field() { grep -oE "$1 [0-9.]+" <<< "$2" | head -1 | grep -oE '[0-9.]+$' || echo nan; }

results="$work/results.tsv"
: > "$results"
echo "bench-latency: $rounds rounds, rates {$rates}, $arrivals arrivals, 4 connections x 64 in flight, $seconds s runs"
for r in $(seq 1 "$rounds"); do
  line=$(run)
  max=$(grep -oE '= [0-9]+ calls/s' <<< "$line" | grep -oE '[0-9]+' || echo 0)
  echo "round $r closed loop: $line"
  [ "${max:-0}" -gt 0 ] || { echo "closed loop failed" >&2; exit 1; }
  for spec in $rates; do
    case "$spec" in
      *%) rate=$(( max * ${spec%\%} / 100 )) ;;
      *) rate=$spec ;;
    esac
    line=$(run --rate "$rate" --arrivals "$arrivals")
    echo "round $r $spec ($rate/s): $line"
    if grep -q ', 0 errors' <<< "$line"; then
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$spec" "$rate" "$(field p50 "$line")" \
        "$(field p99 "$line")" "$(field p99.9 "$line")" "$(field client "$line")" \
        "$(field server "$line")" >> "$results"
    else
      echo "   (left out of the summary: calls failed or were not started)"
    fi
  done
done

python3 - "$results" $rates <<'PY'
import sys, statistics
path, specs = sys.argv[1], sys.argv[2:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
print("\nsummary (median over rounds; ms and µs per call)")
print(f"  {'rate':>8} {'calls/s':>8} {'p50':>7} {'p99':>7} {'p99.9':>7} {'client':>7} {'server':>7}  rounds")
for spec in specs:
    got = [r for r in rows if r[0] == spec]
    if not got:
        print(f"  {spec:>8}  (no clean run)")
        continue
    med = lambda i: statistics.median(float(r[i]) for r in got)
    print(f"  {spec:>8} {med(1):8.0f} {med(2):7.2f} {med(3):7.2f} {med(4):7.2f} {med(5):7.1f} {med(6):7.1f}  {len(got)}")
PY
