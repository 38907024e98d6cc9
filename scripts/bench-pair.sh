#!/usr/bin/env bash
# Paired service benchmark: servers side by side on this machine, short `sesame bench` runs
# rotating between them, and each arm's throughput as a ratio to the first arm's in the same
# round. This host's speed drifts by up to 2x within minutes; only runs taken in turns compare,
# and a ratio per round (median over rounds) is steadier than any one figure (docs/service.md,
# docs/security.md).
#
#   scripts/bench-pair.sh [--rounds N] [--inflight "4 16 64"] [--seconds S] [--rpc score|ping|both|stream]
#                         [--client BIN] [ARM ...]
#
# ARM is NAME:BINARY[:ENV=VALUE,ENV=VALUE...]. Every server gets its own port and its own audit
# files in a temporary directory; the metrics listener and the file watcher are off. With no ARM:
#   off:target/release/sesame:SESAME_AUDIT_ENABLED=false  on:target/release/sesame
# which measures the audit log's cost (issue #7). `--rpc both` runs Ping then Score on each arm
# and also prints Score's throughput over Ping's (issue #5).
#
# Output: one line per round, depth and arm (calls/s, p50, p99, CPU per call), then per depth and
# arm the ratios to the first arm and their median.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/serve.sh

rounds=3 inflight="4 16 64" seconds=3 rpc=score
client="${CARGO_TARGET_DIR:-target}/release/sesame"
arms=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --inflight) inflight=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rpc) rpc=$2; shift 2 ;;
    --client) client=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) arms+=("$1"); shift ;;
  esac
done
[ -x "$client" ] || { echo "no client binary at $client (cargo build --release)" >&2; exit 2; }
if [ ${#arms[@]} -eq 0 ]; then
  arms=("off:$client:SESAME_AUDIT_ENABLED=false" "on:$client")
fi

work=$(mktemp -d)
pids=() names=() ports=()
cleanup() {
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port_base=$((20000 + RANDOM % 20000))
for i in "${!arms[@]}"; do
  IFS=: read -r name bin envs <<< "${arms[$i]}"
  [ -x "$bin" ] || { echo "arm $name: no binary at $bin" >&2; exit 2; }
  envargs=()
  [ -n "${envs:-}" ] && [ "$envs" != "-" ] && IFS=, read -ra envargs <<< "$envs"
  port=$((port_base + i))
  start_bench_server "$bin" "$port" "$work/$name" "${envargs[@]}"
  pids+=($!) names+=("$name") ports+=("$port")
done

for i in "${!names[@]}"; do
  wait_until_scoring "$client" "${ports[$i]}" "${pids[$i]}" "$work/${names[$i]}" "arm ${names[$i]}"
done

results="$work/results.tsv"
: > "$results"
echo "bench-pair: ${#names[@]} arms (${names[*]}), $rounds rounds, in flight 4 x {$inflight}, $seconds s runs, rpc $rpc"
for r in $(seq 1 "$rounds"); do
  order=("${!names[@]}")
  # Every other round the other way round, so no arm always runs first or last.
  if [ $((r % 2)) -eq 0 ]; then
    order=($(printf '%s\n' "${order[@]}" | tac))
  fi
  for n in $inflight; do
    for i in "${order[@]}"; do
      out=$("$client" bench --addr "http://127.0.0.1:${ports[$i]}" --rpc "$rpc" --connections 4 \
              --inflight "$n" --seconds "$seconds" --user U0004ecbcf3e8 --server-pid "${pids[$i]}" 2>&1) || {
        echo "round $r 4x$n ${names[$i]}: bench failed: $out" >&2; exit 1; }
      failed=0
      while IFS= read -r line; do
        case "$line" in
          *" calls/s"*)
            what=${line%%:*}; what=${what// /}
            cps=$(grep -oE '= [0-9]+ calls/s' <<< "$line" | grep -oE '[0-9]+')
            echo "round $r 4x$n ${names[$i]} $line"
            # A run with failed calls measures something else: reported, left out of the ratios.
            if grep -q ', 0 errors' <<< "$line"; then
              printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$n" "${names[$i]}" "$what" "$cps" >> "$results"
            else
              failed=1
              echo "   (left out of the summary: calls failed)"
            fi ;;
          "score/ping: throughput"*)
            ratio=$(grep -oE 'throughput [0-9.]+x' <<< "$line" | grep -oE '[0-9.]+')
            echo "round $r 4x$n ${names[$i]} $line"
            [ "$failed" = 1 ] || printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$n" "${names[$i]}" "score/ping" "$ratio" >> "$results" ;;
        esac
      done <<< "$out"
    done
  done
done

python3 - "$results" "${names[@]}" <<'PY'
import sys, statistics, collections
path, names = sys.argv[1], sys.argv[2:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
val = {(r, n, arm, what): float(v) for r, n, arm, what, v in rows}
depths = sorted({int(n) for _, n, _, _, _ in rows})
whats = [w for w in ("score", "ping", "stream") if any(k[3] == w for k in val)]
print("\nsummary (ratios to the first arm in the same round; median over rounds)")
for n in depths:
    for what in whats:
        for arm in names[1:]:
            ratios = []
            for r in sorted({k[0] for k in val}, key=int):
                a, b = val.get((r, str(n), arm, what)), val.get((r, str(n), names[0], what))
                if a is not None and b:
                    ratios.append(a / b)
            if ratios:
                print(f"  4x{n} {what}: {arm}/{names[0]} = " + ", ".join(f"{x:.2f}" for x in ratios)
                      + f"  (median {statistics.median(ratios):.2f})")
    for arm in names:
        sp = [val[k] for k in sorted(val) if k[1] == str(n) and k[2] == arm and k[3] == "score/ping"]
        if sp:
            print(f"  4x{n} {arm}: score/ping = " + ", ".join(f"{x:.2f}" for x in sp)
                  + f"  (median {statistics.median(sp):.2f})")
PY
