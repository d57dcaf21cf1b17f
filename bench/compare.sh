#!/usr/bin/env bash
# confab against the Node.js peer, scenario by scenario, in one run, and
# docs/benchmarks.md written from the results.
#
# Each scenario gets fresh servers (a new temporary data directory for
# confab, a new process for the peer), each pinned to core 0, while the
# generator runs on core 1. Scenarios alternate between the two servers,
# so background load on a shared machine hits both alike; every figure is
# read as a ratio of the two measured in the same run.
#
#   bash bench/compare.sh            # full sizes, about 20 minutes
#   QUICK=1 bash bench/compare.sh    # small sizes, to try the script
#
# Environment: PEER_DIR (the Node.js peer's sources, default
# ../shared/peers/node-ws), OUT (result directory, default
# target/bench-results), SCENARIOS (a subset to run again, e.g. "fanout";
# the document is written from every result in OUT), IDLE_N, FANOUT_ROOMS,
# FANOUT_MEMBERS, START_RATE, DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROOT=$(pwd)
PEER_SRC=${PEER_DIR:-$ROOT/../shared/peers/node-ws}
OUT=${OUT:-$ROOT/target/bench-results}
DOC=$ROOT/docs/benchmarks.md
if [[ -n ${QUICK:-} ]]; then
    IDLE_N=${IDLE_N:-2000}; FANOUT_ROOMS=${FANOUT_ROOMS:-10}; FANOUT_MEMBERS=${FANOUT_MEMBERS:-20}
    DURATION=${DURATION:-3s}; WARMUP=1s; DURABLE_N=50; CHURN_N=20; START_RATE=${START_RATE:-100}; STEPS=4
    SLOW_ROOMS=2; SLOW_RATE=100
else
    IDLE_N=${IDLE_N:-19000}; FANOUT_ROOMS=${FANOUT_ROOMS:-100}; FANOUT_MEMBERS=${FANOUT_MEMBERS:-100}
    DURATION=${DURATION:-10s}; WARMUP=2s; DURABLE_N=500; CHURN_N=100; START_RATE=${START_RATE:-300}; STEPS=16
    SLOW_ROOMS=10; SLOW_RATE=500
fi

cargo build --release --quiet
BIN=$ROOT/target/release/confab
mkdir -p "$OUT" docs/bench
WORK=$(mktemp -d)
CONFAB_PID= PEER_PID=
cleanup() { stop_pid "$CONFAB_PID"; stop_pid "$PEER_PID"; rm -rf "$WORK"; }
trap cleanup EXIT

# The peer's directory may be read-only: install its dependencies in a copy.
cp -r "$PEER_SRC" "$WORK/peer"
chmod -R u+w "$WORK/peer"
(cd "$WORK/peer" && npm ci --omit=dev --no-audit --no-fund --silent)

GEN=()
command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]] && GEN=(taskset -c 1)

# bench NAME SERVER ARGS…: one scenario against one fresh server.
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
    echo "confab bench $* --url URL --server-pid PID --out SERVER-$name.json" >"$OUT/$name.cmd"
    "${GEN[@]}" "$BIN" bench "$@" --url "$url" --server-pid "$pid" --out "$OUT/$server-$name.json" \
        | tee "$OUT/$server-$name.txt" || echo "(the $name run on $server failed; see its result)"
    if [[ $server == confab ]]; then stop_pid "$CONFAB_PID"; CONFAB_PID=; rm -rf "$WORK/confab-$name"
    else stop_pid "$PEER_PID"; PEER_PID=; fi
}

SCENARIOS=${SCENARIOS:-idle fanout durable churn slow}
both() {
    local name=$1
    shift
    [[ " $SCENARIOS " == *" $name "* ]] || return 0
    bench "$name" confab "$@"
    bench "$name" peer "$@"
}

both idle idle -n "$IDLE_N" --members 100 --steps 10
both fanout fanout --rooms "$FANOUT_ROOMS" --members "$FANOUT_MEMBERS" --rate "$START_RATE" \
    --find-max --factor 1.1 --max-steps "$STEPS" --duration "$DURATION" --warmup "$WARMUP"
both durable durable -n "$DURABLE_N" --members 10 --duration "$DURATION" --warmup "$WARMUP"
both churn churn -n "$CHURN_N" --members 10 --duration "$DURATION" --warmup "$WARMUP"
# Slow readers: fewer, busier rooms (50 messages/s each at full size), so
# that a stalled member has a real backlog building up against it.
both slow slow --rooms "$SLOW_ROOMS" --members "$FANOUT_MEMBERS" --rate "$SLOW_RATE" \
    --stalled 0.01 --duration "$DURATION" --warmup "$WARMUP"

"$BIN" bench chart --kind latency --out docs/bench/latency.svg --y-max 100 \
    --title "Fan-out: ${FANOUT_ROOMS} rooms × ${FANOUT_MEMBERS} members, servers on one core" \
    "confab=$OUT/confab-fanout.json" "Node.js peer=$OUT/peer-fanout.json"
"$BIN" bench chart --kind memory --out docs/bench/memory.svg \
    --title "Idle connections, servers on one core" \
    "confab=$OUT/confab-idle.json" "Node.js peer=$OUT/peer-idle.json"

# ---- docs/benchmarks.md ----
j() { jq -r "$2 // empty" "$OUT/$1.json" 2>/dev/null || true; }
num() { [[ -n $1 ]] && printf '%.*f' "$2" "$1" || printf 'n/a'; }
# A ratio only of two positive figures.
ratio() { if [[ -n $1 && -n $2 ]] && awk "BEGIN{exit !($1 > 0 && $2 > 0)}"; then awk "BEGIN{printf \"%.2f\", $1/$2}"; else printf 'n/a'; fi; }
row() { # figure, better, confab value, peer value, decimals
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$(num "$3" "$5")" "$(num "$4" "$5")" "$(ratio "$3" "$4")"
}
# The best passing step of a find-max run (nothing when none passed).
best() { echo "(if .best == null then null else .steps[.best] end)"; }
kib() { awk "BEGIN{printf \"%f\", $1/1024}"; }
mibv() { [[ -n $1 ]] && awk "BEGIN{printf \"%f\", $1/1048576}"; }
pass() { [[ $(j "$1" .passed) == true ]] && echo pass || echo FAIL; }

{
    echo "# Benchmarks"
    echo
    echo "Produced by \`bash bench/compare.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); rerun it to refresh this file"
    echo "(the notes at the end come from \`bench/notes.md\`)."
    echo
    echo "## Machine"
    echo
    echo "- $(nproc) cores: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    echo "- kernel $(uname -r), $(free -g | awk '/^Mem:/{print $2}') GiB of memory"
    echo "- open files per process: $(ulimit -n)"
    echo "- confab $(git rev-parse --short HEAD 2>/dev/null || echo '?') (release build); the Node.js peer on node $(node --version)"
    echo "- the machine is shared: other builds ran during the measurements, which is why figures are read as ratios"
    echo
    echo "Each server ran alone on core 0 (\`taskset -c 0\`), the generator on core 1. Each scenario got"
    echo "fresh servers: confab on a new data directory with the limits in \`bench/env.sh\` (abuse limits raised,"
    echo "argon2 cost lowered for fast registration), the Node.js peer with \`--bcrypt-cost 4\`."
    echo "The peer keeps messages in memory only; confab commits each one to disk (fsync, group commit)"
    echo "before it is delivered or acknowledged."
    echo
    echo "## Results"
    echo
    echo "| figure | better | confab | Node.js peer | confab / peer |"
    echo "|---|---|---|---|---|"
    c=$(j confab-idle .idle.rss_per_connection); p=$(j peer-idle .idle.rss_per_connection)
    row "idle: server RSS per connection, KiB (at $(j confab-idle .idle.connections) / $(j peer-idle .idle.connections) connections)" lower \
        "$([[ -n $c ]] && kib "$c")" "$([[ -n $p ]] && kib "$p")" 2
    row "idle: connections per second (connect, auth, join)" higher \
        "$(j confab-idle .idle.connects_per_sec)" "$(j peer-idle .idle.connects_per_sec)" 0
    row "fan-out: deliveries/s at the highest rate with p99 ≤ 50 ms and nothing lost" higher \
        "$(j confab-fanout "$(best).deliveries_per_sec")" "$(j peer-fanout "$(best).deliveries_per_sec")" 0
    row "fan-out: p99 ms at that rate" lower \
        "$(j confab-fanout "$(best).latency.p99_ms")" "$(j peer-fanout "$(best).latency.p99_ms")" 1
    row "durable: acknowledged messages/s" higher \
        "$(j confab-durable '.steps[0].acked_per_sec')" "$(j peer-durable '.steps[0].acked_per_sec')" 0
    row "durable: ack p99 ms" lower \
        "$(j confab-durable '.steps[0].ack_latency.p99_ms')" "$(j peer-durable '.steps[0].ack_latency.p99_ms')" 1
    row "churn: connect+auth+join+send cycles/s" higher \
        "$(j confab-churn '.steps[0].ops_per_sec')" "$(j peer-churn '.steps[0].ops_per_sec')" 0
    row "churn: cycle p99 ms" lower \
        "$(j confab-churn '.steps[0].latency.p99_ms')" "$(j peer-churn '.steps[0].latency.p99_ms')" 1
    row "slow readers: others' p99 ms, all reading (median of 4 phases)" lower \
        "$(j confab-slow .slow.baseline_p99_ms)" "$(j peer-slow .slow.baseline_p99_ms)" 1
    row "slow readers: others' p99 ms, 1% of members stalled (median of 3 phases, between the others)" lower \
        "$(j confab-slow .slow.stalled_p99_ms)" "$(j peer-slow .slow.stalled_p99_ms)" 1
    row "slow readers: change of others' p99 when stalled, %" lower \
        "$(j confab-slow .slow.p99_increase_pct)" "$(j peer-slow .slow.p99_increase_pct)" 0
    row "slow readers: server RSS peak while stalled, MiB" lower \
        "$(mibv "$(j confab-slow .slow.rss_peak)")" "$(mibv "$(j peer-slow .slow.rss_peak)")" 1
    echo
    echo "## Targets"
    echo
    echo "The figures above against the targets of the benchmark issue, each server on one core."
    echo
    echo "| figure | target | confab | met | beats the peer |"
    echo "|---|---|---|---|---|"
    # target_row FIGURE TARGET-TEXT CONFAB PEER DECIMALS lower|higher LIMIT
    target_row() {
        local met=n/a beats=n/a
        if [[ -n $3 ]]; then
            if [[ $6 == lower ]]; then
                met=$(awk "BEGIN{print ($3 <= $7) ? \"yes\" : \"no\"}")
                [[ -n $4 ]] && beats=$(awk "BEGIN{print ($3 < $4) ? \"yes\" : \"no\"}")
            else
                met=$(awk "BEGIN{print ($3 >= $7) ? \"yes\" : \"no\"}")
                [[ -n $4 ]] && beats=$(awk "BEGIN{print ($3 > $4) ? \"yes\" : \"no\"}")
            fi
        fi
        printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$(num "$3" "$5")" "$met" "$beats"
    }
    c=$(j confab-idle .idle.rss_per_connection); p=$(j peer-idle .idle.rss_per_connection)
    target_row "idle: server RSS per connection, KiB" "≤ 4" "$([[ -n $c ]] && kib "$c")" "$([[ -n $p ]] && kib "$p")" 2 lower 4
    target_row "fan-out ${FANOUT_ROOMS} × ${FANOUT_MEMBERS}: deliveries/s, p99 ≤ 50 ms, nothing lost" "≥ 100,000" \
        "$(j confab-fanout "$(best).deliveries_per_sec")" "$(j peer-fanout "$(best).deliveries_per_sec")" 0 higher 100000
    target_row "durable: acknowledged messages/s, each on disk first" "≥ 30,000" \
        "$(j confab-durable '.steps[0].acked_per_sec')" "$(j peer-durable '.steps[0].acked_per_sec')" 0 higher 30000
    target_row "churn: connect + auth + join (+ send) per second" "≥ 5,000" \
        "$(j confab-churn '.steps[0].ops_per_sec')" "$(j peer-churn '.steps[0].ops_per_sec')" 0 higher 5000
    target_row "slow readers: others' p99 change with 1% stalled, %" "≤ +20" \
        "$(j confab-slow .slow.p99_increase_pct)" "$(j peer-slow .slow.p99_increase_pct)" 0 lower 20
    echo
    echo "Checks (every delivery counted; a loss, duplicate or reordering fails a run):"
    echo
    for s in idle fanout durable churn slow; do
        echo "- $s: confab $(pass confab-$s), peer $(pass peer-$s)$(
            b=$(jq -r '.bound_by | join("; ")' "$OUT/confab-$s.json" 2>/dev/null); [[ -n $b ]] && echo "; confab bound by: $b")$(
            b=$(jq -r '.bound_by | join("; ")' "$OUT/peer-$s.json" 2>/dev/null); [[ -n $b ]] && echo "; peer bound by: $b")"
    done
    echo
    echo "![fan-out latency against rate](bench/latency.svg)"
    echo
    echo "![server memory against connections](bench/memory.svg)"
    echo
    echo "## Fan-out steps"
    echo
    for s in confab peer; do
        echo "$s:"
        echo
        echo '```'
        sed -n '/^confab bench/,$p' "$OUT/$s-fanout.txt" 2>/dev/null || true
        echo '```'
        echo
    done
    echo "## Commands"
    echo
    echo "Servers (one fresh pair per scenario):"
    echo
    echo '```sh'
    echo "source bench/env.sh; taskset -c 0 confab serve --data-dir \$(mktemp -d) --bind 127.0.0.1:0"
    echo "taskset -c 0 node server.js --port P --bcrypt-cost 4"
    echo '```'
    echo
    echo "Generator, each against both servers (\`taskset -c 1\`):"
    echo
    echo '```sh'
    for s in idle fanout durable churn slow; do if [[ -f $OUT/$s.cmd ]]; then cat "$OUT/$s.cmd"; fi; done
    echo '```'
    echo
    [[ -f bench/notes.md ]] && cat bench/notes.md
} >"$DOC"
echo "wrote $DOC"
