#!/usr/bin/env bash
# The batch benchmark of issue #8: a generated population scored end to end (raw tables ->
# features -> scores -> Parquet) by `sesame batch` and by the pandas + optbinning script
# (scripts/batch_pandas_baseline.py), each under /usr/bin/time -v, with the ratio of their wall
# times. docs/batch.md has the results and why the order and the rest matter here.
#
#   scripts/bench-1m.sh [--users 1000000] [--data DIR] [--runs 3] [--rest 120] [--no-pandas] [--warm]
#                       [--profile release|dist]
#
# - The population is generated into DIR (default /tmp/sesame-g<users>) when DIR does not exist
#   (1M users: ~1 GB of Parquet, ~35 s).
# - pandas runs first (needs `pip install pandas pyarrow optbinning`; ~18 GB of memory and ~5 min
#   at 1M users), then the script rests --rest seconds, then `sesame batch` runs --runs times.
#   A run started right after pandas' 18 GB were freed used to take up to 2-4x as long with the
#   same CPU time; the table shows each run's CPU time beside its wall time so such a run is
#   visible, and the rest lets the host settle (docs/batch.md).
# - Most of that was the page cache: the inputs fall out of it during pandas' minutes (its memory,
#   and on hosts with DAMON pageout, any file idle for a minute: noted below). `sesame batch` now
#   prefetches its tables (src/io.rs, `prefetch_files`), so its first run after pandas is timed
#   as it comes; `--warm` reads the inputs and the program into the cache before each timed run
#   of both tools, to take the host's disk out of the comparison (and prints how long it took).
# - Each timed run's row says what the disk gave: `disk MB/s`, a 32 MB O_DIRECT read just before
#   and just after the run (disk_probe), and `ms/read`, the device's mean time per read during it.
# - --profile picks the build to time: `release` (default, what `cargo run --release` runs) or
#   `dist` (Cargo.toml: the deployment build with whole-program LTO; `cargo build --profile dist`,
#   ~20 min cold on 2 cores).
# - Ratios use pandas' time without its import and model fit (it fits a scorecard; `sesame batch`
#   loads a trained one), as its own summary line reports it, and its whole wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

users=1000000 data="" runs=3 rest=120 pandas=1 warm=0 profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --users) users=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --rest) rest=$2; shift 2 ;;
    --no-pandas) pandas=0; shift ;;
    --warm) warm=1; shift ;;
    --profile) profile=$2; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bin="${CARGO_TARGET_DIR:-target}/$profile/sesame"
[ -x "$bin" ] || { echo "no binary at $bin (cargo build --profile $profile)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian package 'time')" >&2; exit 2; }
data=${data:-/tmp/sesame-g$users}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Some hosts (this project's VM) run DAMON with a `pageout` scheme, which drops page-cache pages
# not read for a while: then the inputs come from the disk again after pandas' minutes, whatever
# memory it used (docs/batch.md, stop 28). Say so, since it decides what the first run measures.
for scheme in /sys/kernel/mm/damon/admin/kdamonds/*/contexts/*/schemes/*/; do
  [ "$(cat "$scheme/action" 2>/dev/null)" = pageout ] || continue
  context=${scheme%/schemes/*}
  kdamond=${context%/contexts/*}
  [ "$(cat "$kdamond/state" 2>/dev/null)" = on ] || continue
  age=$(cat "$scheme/access_pattern/age/min" 2>/dev/null || echo '?')
  aggr_us=$(cat "$context/monitoring_attrs/intervals/aggr_us" 2>/dev/null || echo 0)
  echo "== note: DAMON pageout is on: pages idle for $age x $((aggr_us / 1000)) ms are dropped"
done

if [ ! -d "$data" ]; then
  echo "== generating $users users into $data"
  "$bin" datasets generate --users "$users" --out "$data" --quiet
fi

# "wall_s user_s sys_s peak_kb disk_mb" from a /usr/bin/time -v log (disk_mb: what the process
# read from the disk, not from the page cache; "File system inputs" counts 512-byte blocks).
times_of() {
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
    /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident/ { m = $2 }
    /File system inputs/ { r = $2 }
    END { printf "%.1f %.1f %.1f %d %.0f\n", w, u, s, m, r * 512 / 1e6 }' "$1"
}

# The machine's CPU counters from /proc/stat: "steal iowait total" in ticks, all CPUs together
# (Linux).
cpu_ticks() {
  awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, $6, t; exit }' /proc/stat 2>/dev/null || echo "0 0 0"
}
# Between two readings: the percent of the machine's CPU time the hypervisor gave elsewhere
# (steal), then the percent spent idle with a disk read or write outstanding (iowait); "-" when
# the counters could not be read (no /proc/stat), rather than a 0 that was not seen.
cpu_pcts() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[3] - x[3];
    if (d > 0) printf "%.0f %.0f", 100 * (y[1] - x[1]) / d, 100 * (y[2] - x[2]) / d; else printf "- -" }'
}

# Reads the inputs (and the program about to run) once, so the timed run starts from the page
# cache whatever the run before it evicted.
warm_cache() {
  [ "$warm" = 1 ] || return 0
  local t0 t1
  t0=$(date +%s.%N)
  cat "$data"/*.parquet "$@" > /dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "(page cache warmed in %.1f s)\n", b - a }'
}

# What the disk gives right now, measured outside either tool: MB/s of one 32 MB read with O_DIRECT
# (past the page cache, so it warms nothing) at a random offset of the largest input. Taken before
# and after each timed run, so a run that waited on a slow disk can be told from a run that was
# slow by itself (docs/batch.md, stop 34). "-" when the read fails (a file system without O_DIRECT).
disk_probe() {
  local f size skip t0 t1
  # no `| head` here: under pipefail a SIGPIPE to ls would end the script
  f=$(ls -S "$data"/*.parquet)
  f=${f%%$'\n'*}
  size=$(($(stat -c %s "$f") / 1048576))
  [ "$size" -gt 64 ] || { echo -; return; }
  skip=$(( (RANDOM * 32768 + RANDOM) % (size - 32) ))
  t0=$(date +%s.%N)
  dd if="$f" of=/dev/null bs=1M count=32 skip="$skip" iflag=direct status=none 2>/dev/null || { echo -; return; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 32 / (b - a) }'
}

# The block device under the inputs, for its counters in /proc/diskstats (Linux; empty elsewhere).
disk_dev=$(basename "$(df --output=source "$data" 2>/dev/null | tail -1)" 2>/dev/null || true)
# "reads ms_reading" of that device so far: the reads it completed and the milliseconds they took,
# summed over reads in flight together (so queueing counts).
disk_counters() {
  awk -v d="$disk_dev" '$3 == d { print $4, $7; found = 1 } END { if (!found) print "0 0" }' /proc/diskstats 2>/dev/null || echo "0 0"
}
# Milliseconds per read the device completed between two readings: a slow device (on a VM, a slow
# host) shows here whatever the run asked of it; "-" when no read completed.
read_latency() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); n = y[1] - x[1];
    if (n > 0) printf "%.1f", (y[2] - x[2]) / n; else printf "-" }'
}

table="$out/table"
: > "$table"
pandas_wall="" pandas_net=""
if [ "$pandas" = 1 ]; then
  echo "== pandas + optbinning (scripts/batch_pandas_baseline.py)"
  warm_cache scripts/batch_pandas_baseline.py
  disk_before=$(disk_probe)
  before=$(cpu_ticks) disk_before_counts=$(disk_counters)
  /usr/bin/time -v python3 scripts/batch_pandas_baseline.py --data "$data" --out "$out/pandas.parquet" \
    > "$out/pandas.out" 2> "$out/pandas.time" || { tail -20 "$out/pandas.time" >&2; exit 1; }
  read -r w u s m r <<< "$(times_of "$out/pandas.time")"
  pandas_wall=$w
  pandas_net=$(grep -oE 'without import\+fit [0-9.]+' "$out/pandas.out" | grep -oE '[0-9.]+$' || echo "$w")
  pcts="$(cpu_pcts "$before" "$(cpu_ticks)") $(read_latency "$disk_before_counts" "$(disk_counters)")"
  echo "pandas $w $u $s $m $r $pcts $disk_before $(disk_probe)" >> "$table"
  tail -1 "$out/pandas.out"
  echo "== resting $rest s"
  sleep "$rest"
fi

for i in $(seq 1 "$runs"); do
  echo "== sesame batch, run $i"
  warm_cache "$bin" models/default/*
  disk_before=$(disk_probe)
  before=$(cpu_ticks) disk_before_counts=$(disk_counters)
  /usr/bin/time -v "$bin" batch --model models/default --data "$data" --out "$out/sesame.parquet" \
    --scenario cash_loan > "$out/sesame.out" 2> "$out/sesame.time" || { tail -20 "$out/sesame.time" >&2; exit 1; }
  read -r w u s m r <<< "$(times_of "$out/sesame.time")"
  pcts="$(cpu_pcts "$before" "$(cpu_ticks)") $(read_latency "$disk_before_counts" "$(disk_counters)")"
  echo "sesame$i $w $u $s $m $r $pcts $disk_before $(disk_probe)" >> "$table"
  head -1 "$out/sesame.out"
done

echo
# cores = (user + sys) / wall, and steal = the share of the machine's CPU time the hypervisor
# gave elsewhere during the run: a run the host starved shows here, not only in its ratio
# (docs/batch.md, stop 30: such runs ran at 0.9-1.35 cores, the others at 1.5-1.8). A run that
# waited on the disk shows in iowait % and disk MB (docs/batch.md, stop 31).
# disk MB/s: the probe before and after the run (disk_probe); ms/read: the device's mean time per
# read during the run, every process's reads included (read_latency).
printf '%-8s %9s %9s %9s %6s %7s %8s %7s %7s %11s %10s %s\n' run "wall s" "user s" "sys s" cores "steal %" "iowait %" "disk MB" "ms/read" "disk MB/s" "peak GB" "pandas / run"
while read -r name w u s m r st io lat d0 d1; do
  ratio=""
  if [ -n "$pandas_wall" ] && [ "$name" != pandas ]; then
    ratio=$(awk -v a="$pandas_net" -v b="$pandas_wall" -v w="$w" 'BEGIN { printf "%.1fx (%.1fx whole)", a / w, b / w }')
  fi
  cores=$(awk -v w="$w" -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", (w > 0 ? (u + s) / w : 0) }')
  printf '%-8s %9s %9s %9s %6s %7s %8s %7s %7s %11s %10.2f %s\n' "$name" "$w" "$u" "$s" "$cores" "$st" "$io" "$r" "$lat" "$d0/$d1" "$(awk -v m="$m" 'BEGIN { print m / 1048576 }')" "$ratio"
done < "$table"
if [ -n "$pandas_net" ]; then echo "(pandas without import + fit: $pandas_net s)"; fi
