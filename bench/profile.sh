#!/usr/bin/env bash
# Where a fan-out's time goes: a confab built with symbols
# (`--profile profiling`) pinned to core 0, the fixed-rate fan-out of
# compare.sh on core 1, and `perf record -g` (Debian's linux-perf) over the
# measured window; then a flame graph (inferno, `cargo install inferno`)
# and the top of `perf report`.
#
#   bash bench/profile.sh                  # writes target/profile/{perf.data,flame.svg,report.txt}
#
# Environment: ROOMS, MEMBERS, RATE (default 100, 100, 850), DURATION
# (seconds recorded, default 10), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

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
taskset -c 1 "$BIN" bench fanout --url "$CONFAB_URL" --server-pid "$CONFAB_PID" --rooms "$ROOMS" \
    --members "$MEMBERS" --rate "$RATE" --duration "$((DURATION + 2))s" --warmup 3s --out "$OUT/fanout.json" &
GEN_PID=$!
# Setup and warm-up first: record the steady state only.
sleep "${SETTLE:-12}"
perf record -F 499 -g --call-graph dwarf,16384 -p "$CONFAB_PID" -o "$OUT/perf.data" -- sleep "$DURATION" 2>/dev/null
wait "$GEN_PID" || true
perf report -i "$OUT/perf.data" --no-children --percent-limit 0.7 --stdio 2>/dev/null | grep -v '^$' | head -n 200 >"$OUT/report.txt"
if command -v inferno-collapse-perf >/dev/null; then
    perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$OUT/flame.svg"
    echo "flame graph: $OUT/flame.svg"
fi
echo "report: $OUT/report.txt"
