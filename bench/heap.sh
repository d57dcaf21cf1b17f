#!/usr/bin/env bash
# What an idle connection keeps on the heap, by where it was allocated:
# confab built with symbols and the C allocator (`--profile profiling
# --features system-alloc`: valgrind sees only the C allocator) runs under
# valgrind's DHAT while `confab bench idle` holds N signed-in connections;
# DHAT's figures at the heap's peak (all N connected) are grouped by the
# first confab frame of each allocation's stack and divided by N.
#
#   bash bench/heap.sh          # writes target/heap/{dhat.json,report.txt}
#
# Environment: N (connections, default 1000), MEMBERS (per room, 100), OUT.
# The allocator's own rounding and pages are not in these figures: `bench
# idle`'s RSS per connection (compare.sh) is the figure to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

N=${N:-1000}; MEMBERS=${MEMBERS:-100}
OUT=${OUT:-$(pwd)/target/heap}
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
cargo build --profile profiling --features system-alloc --quiet
BIN=$(pwd)/target/profiling/confab
# The bench client is the release build: fast, and not the one measured.
cargo build --release --quiet
mkdir -p "$OUT"
WORK=$(mktemp -d)
CONFAB_PID=
cleanup() { stop_pid "$CONFAB_PID"; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/data"
(
    source bench/env.sh
    exec valgrind --tool=dhat --dhat-out-file="$OUT/dhat.json" "$BIN" serve --data-dir "$WORK/data" --bind 127.0.0.1:0
) >"$WORK/data.log" 2>&1 &
CONFAB_PID=$!
CONFAB_LOG=$WORK/data.log
# valgrind starts slowly: a minute for the address.
START_WAIT=60 await_start confab "$CONFAB_PID" "$CONFAB_LOG" confab_listening
target/release/confab bench idle -n "$N" --members "$MEMBERS" --steps 1 --url "$CONFAB_URL" \
    --out "$OUT/idle.json" >/dev/null
# DHAT writes its file when the server exits.
kill -TERM "$CONFAB_PID"
wait "$CONFAB_PID" || true
CONFAB_PID=
python3 bench/dhat_report.py "$OUT/dhat.json" "$N" >"$OUT/report.txt"
cat "$OUT/report.txt"
