#!/usr/bin/env bash
# What mentions and unread tracking cost a delivery: rooms of 100 members,
# one run of `confab bench fanout --mentions`, whose steps alternate
# between messages that mention two members of their room and messages
# that mention nobody (same length, same rate), and compare the server's
# CPU time per delivery (user + system, from /proc) between the two.
#
#   bash bench/mentions.sh                 # 10 rooms × 100 members
#   ROOMS=20 RATE=400 bash bench/mentions.sh
#
# The server is pinned to core 0 and the generator to core 1 where
# taskset exists. Prints the result table; OUT (default
# target/bench-results/mentions.json) keeps the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROOMS=${ROOMS:-10}
MEMBERS=${MEMBERS:-100}
RATE=${RATE:-200}
PAIRS=${PAIRS:-4}
DURATION=${DURATION:-10s}
OUT=${OUT:-target/bench-results/mentions.json}
mkdir -p "$(dirname "$OUT")"

cargo build --release --quiet
BIN=${CONFAB_BIN:-target/release/confab}
WORK=$(mktemp -d)
CONFAB_PID=
cleanup() { stop_pid "$CONFAB_PID"; rm -rf "$WORK"; }
trap cleanup EXIT

start_confab "$BIN" "$WORK/data" 0
GEN=()
if command -v taskset >/dev/null; then GEN=(taskset -c 1); fi
cmd=(bench fanout --url "$CONFAB_URL" --server-pid "$CONFAB_PID" --rooms "$ROOMS"
     --members "$MEMBERS" --senders 1 --rate "$RATE" --mentions --pairs "$PAIRS"
     --duration "$DURATION" --warmup 2s --out "$OUT")
echo "== confab ${cmd[*]}"
"${GEN[@]}" "$BIN" "${cmd[@]}"
