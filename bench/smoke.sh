#!/usr/bin/env bash
# A short run of every `confab bench` scenario against a throwaway confab
# on loopback: small numbers, a couple of seconds each. Fails when the
# tool breaks or any message is lost, duplicated or reordered (the tool
# exits non-zero then).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

cargo build --quiet
BIN=${CONFAB_BIN:-target/debug/confab}
WORK=$(mktemp -d)
CONFAB_PID=
cleanup() { stop_pid "$CONFAB_PID"; rm -rf "$WORK"; }
trap cleanup EXIT

start_confab "$BIN" "$WORK/data"
echo "== bench smoke against $CONFAB_URL (pid $CONFAB_PID)"
common=(--url "$CONFAB_URL" --duration 2s --warmup 1s --server-pid "$CONFAB_PID")
run() {
    echo "== confab bench $*"
    timeout 90 "$BIN" bench "$@"
}
run idle "${common[@]}" -n 300 --members 50 --steps 2 --workers 2 --out "$WORK/idle.json"
run fanout "${common[@]}" --rooms 4 --members 10 --senders 2 --rate 100 --out "$WORK/fanout.json"
run fanout "${common[@]}" --rooms 2 --members 10 --rate 50 --find-max --max-steps 2 --max-p99-ms 10000 \
    --out "$WORK/findmax.json"
run fanout "${common[@]}" --rooms 2 --members 10 --rate 40 --mentions --pairs 1
run durable "${common[@]}" -n 20 --members 5 --out "$WORK/durable.json"
run churn "${common[@]}" -n 5 --members 5 --out "$WORK/churn.json"
run slow "${common[@]}" --rooms 2 --members 20 --rate 40 --stalled 0.05 --rounds 1
run search --messages 3000 --rooms 6 --users 5 --rooms-per-user 3 --queries 140 --writer-mib 16 --out "$WORK/search.json"
grep -q '"p99_ms"' "$WORK/search.json"
# The server's CPU over each measured window, per delivery, per acked
# message (durable) and per cycle (churn), all read from /proc.
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
for name, key in [("fanout", "cpu_us_per_delivery"), ("durable", "cpu_us_per_acked"),
                  ("durable", "cpu_us_per_delivery"), ("churn", "cpu_us_per_op")]:
    v = json.load(open(f"{w}/{name}.json"))["steps"][0].get(key)
    assert v is not None and v > 0, f"{name}: no {key} ({v!r})"
    print(f"{name}: server CPU {v:.1f} µs ({key})")
PY
run chart --kind latency --out "$WORK/latency.svg" --title smoke "confab=$WORK/findmax.json"
run chart --kind memory --out "$WORK/memory.svg" --title smoke "confab=$WORK/idle.json"
grep -q '<polyline' "$WORK/latency.svg"
grep -q '<polyline' "$WORK/memory.svg"
echo "smoke: 9 passed, 0 failed"
