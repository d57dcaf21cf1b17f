#!/usr/bin/env bash
# confab's /socket.io/ against the official Node.js `socket.io` server
# (bench/peers/node-socketio), in one run: idle memory per connection and
# fan-out deliveries/s, each server alone on core 0, the generator
# (`confab bench --socketio`, Socket.IO over WebSocket) on core 1.
# Prints the results; docs/benchmarks.md records them.
#
#   bash bench/socketio.sh            # full sizes, about 5 minutes
#   QUICK=1 bash bench/socketio.sh    # small sizes, to try the script
#
# Environment: OUT (result directory, default target/bench-socketio),
# IDLE_N, FANOUT_ROOMS, FANOUT_MEMBERS, START_RATE, DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/bench-socketio}
if [[ -n ${QUICK:-} ]]; then
    IDLE_N=${IDLE_N:-1000}; FANOUT_ROOMS=${FANOUT_ROOMS:-10}; FANOUT_MEMBERS=${FANOUT_MEMBERS:-20}
    DURATION=${DURATION:-3s}; WARMUP=1s; START_RATE=${START_RATE:-100}; STEPS=4
else
    IDLE_N=${IDLE_N:-10000}; FANOUT_ROOMS=${FANOUT_ROOMS:-100}; FANOUT_MEMBERS=${FANOUT_MEMBERS:-100}
    DURATION=${DURATION:-8s}; WARMUP=2s; START_RATE=${START_RATE:-100}; STEPS=16
fi

cargo build --release --quiet
BIN=$TARGET/release/confab
mkdir -p "$OUT"
WORK=$(mktemp -d)
CONFAB_PID= PEER_PID=
cleanup() { stop_pid "$CONFAB_PID"; stop_pid "$PEER_PID"; rm -rf "$WORK"; }
trap cleanup EXIT

cp -r bench/peers/node-socketio "$WORK/peer"
rm -rf "$WORK/peer/node_modules"
(cd "$WORK/peer" && npm ci --omit=dev --no-audit --no-fund --silent)

GEN=()
command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]] && GEN=(taskset -c 1)

bench() {
    local name=$1 server=$2
    shift 2
    local url pid
    if [[ $server == confab ]]; then
        start_confab "$BIN" "$WORK/confab-$name" 0
        url=$CONFAB_URL pid=$CONFAB_PID
    else
        start_peer "$WORK/peer" 0
        url=$PEER_URL pid=$PEER_PID
    fi
    echo "== $name on $server ($url, pid $pid)"
    echo "confab bench $* --socketio --url URL --server-pid PID" | tee "$OUT/$name.cmd"
    "${GEN[@]}" "$BIN" bench "$@" --socketio --url "$url" --server-pid "$pid" --out "$OUT/$server-$name.json" \
        | tee "$OUT/$server-$name.txt" || echo "(the $name run on $server failed; see its result)"
    if [[ $server == confab ]]; then stop_pid "$CONFAB_PID"; CONFAB_PID=; rm -rf "$WORK/confab-$name"
    else stop_pid "$PEER_PID"; PEER_PID=; fi
}

for s in confab peer; do bench idle "$s" idle -n "$IDLE_N" --members 100 --steps 5; done
for s in confab peer; do
    bench fanout "$s" fanout --rooms "$FANOUT_ROOMS" --members "$FANOUT_MEMBERS" --rate "$START_RATE" \
        --find-max --factor 1.2 --max-steps "$STEPS" --duration "$DURATION" --warmup "$WARMUP"
done

j() { jq -r "$2 // empty" "$OUT/$1.json" 2>/dev/null || true; }
best="(if .best == null then null else .steps[.best] end)"
echo
echo "| figure | confab /socket.io/ | Node.js socket.io |"
echo "|---|---|---|"
echo "| idle: RSS per connection, KiB | $(j confab-idle '.idle.rss_per_connection / 1024 | . * 100 | round / 100') | $(j peer-idle '.idle.rss_per_connection / 1024 | . * 100 | round / 100') |"
echo "| fan-out: deliveries/s, p99 ≤ 50 ms, nothing lost | $(j confab-fanout "$best.deliveries_per_sec | round") | $(j peer-fanout "$best.deliveries_per_sec | round") |"
echo "| fan-out: p99 ms at that rate | $(j confab-fanout "$best.latency.p99_ms") | $(j peer-fanout "$best.latency.p99_ms") |"
