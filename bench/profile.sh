#!/usr/bin/env bash
# Where a fan-out's time goes: a confab built with symbols
# (`--profile profiling`) pinned to core 0, the fixed-rate fan-out of
# compare.sh on core 1, and `perf record -g` (Debian's linux-perf) over the
# measured window; then a flame graph (inferno, `cargo install inferno`)
# and the top of `perf report`.
#
#   bash bench/profile.sh                  # writes target/profile/{perf.data,flame.svg,report.txt}
#
#   SCENARIO=durable bash bench/profile.sh # the closed loop of acknowledged sends instead
#
# Environment: SCENARIO (fanout or durable), ROOMS, MEMBERS, RATE (fan-out:
# default 100, 100, 850), DURABLE_N (durable: default 500 senders in rooms
# of 10), DURATION (seconds recorded, default 10), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

SCENARIO=${SCENARIO:-fanout}; DURABLE_N=${DURABLE_N:-500}
ROOMS=${ROOMS:-100}; MEMBERS=${MEMBERS:-100}; RATE=${RATE:-850}; DURATION=${DURATION:-10}
OUT=${OUT:-$(pwd)/target/profile}
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
cargo build --profile profiling --quiet
BIN=$(pwd)/target/profiling/confab
mkdir -p "$OUT"
WORK=$(mktemp -d)
CONFAB_PID=
cleanup() { stop_pid "$CONFAB_PID"; rm -rf "$WORK"; }
trap cleanup EXIT

start_confab "$BIN" "$WORK/data" 0
case "$SCENARIO" in
    fanout) ARGS=(fanout --rooms "$ROOMS" --members "$MEMBERS" --rate "$RATE") ;;
    durable) ARGS=(durable -n "$DURABLE_N" --members 10) ;;
    *) echo "SCENARIO is fanout or durable" >&2; exit 2 ;;
esac
taskset -c 1 "$BIN" bench "${ARGS[@]}" --url "$CONFAB_URL" --server-pid "$CONFAB_PID" \
    --duration "$((DURATION + 2))s" --warmup 3s --out "$OUT/$SCENARIO.json" &
GEN_PID=$!
# Setup and warm-up first: record the steady state only.
sleep "${SETTLE:-12}"
perf record -F 499 -g --call-graph dwarf,16384 -p "$CONFAB_PID" -o "$OUT/perf.data" -- sleep "$DURATION" || echo "perf record failed: $?" >&2
wait "$GEN_PID" || true
perf report -i "$OUT/perf.data" --no-children --percent-limit 0.7 --stdio 2>/dev/null | grep -v '^$' | head -n 200 >"$OUT/report.txt"
if command -v inferno-collapse-perf >/dev/null; then
    perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf | python3 bench/fold_names.py |
        inferno-flamegraph --minwidth 0.3 --title "confab, $SCENARIO" >"$OUT/flame.svg"
    echo "flame graph: $OUT/flame.svg"
fi
echo "report: $OUT/report.txt"
