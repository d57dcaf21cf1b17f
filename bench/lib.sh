# Shared by the bench scripts: start and stop throwaway servers on
# loopback. Every wait below is bounded.

# start_confab BIN DATA_DIR [taskset-cpu] → sets CONFAB_PID and CONFAB_URL.
start_confab() {
    local bin=$1 dir=$2 cpu=${3:-}
    mkdir -p "$dir"
    local pin=()
    if [[ -n $cpu ]] && command -v taskset >/dev/null; then pin=(taskset -c "$cpu"); fi
    (
        # shellcheck source=bench/env.sh
        source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
        exec "${pin[@]}" "$bin" serve --data-dir "$dir" --bind 127.0.0.1:0
    ) >"$dir.log" 2>&1 &
    CONFAB_PID=$!
    CONFAB_URL=
    CONFAB_LOG=$dir.log
    await_start confab "$CONFAB_PID" "$dir.log" confab_listening
}

# confab_listening: sets CONFAB_URL once CONFAB_LOG names the address.
confab_listening() {
    CONFAB_URL=$(sed -n 's/^confab listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$CONFAB_LOG" | head -n1)
    [[ -n $CONFAB_URL ]]
}

# await_start NAME PID LOG CHECK…: runs CHECK every 0.1 s until it
# succeeds (at most START_WAIT seconds, default 10), giving up early if
# PID exits; on failure the server's LOG is shown.
await_start() {
    local name=$1 pid=$2 log=$3
    shift 3
    for _ in $(seq 1 "$((${START_WAIT:-10} * 10))"); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$log" >&2
    return 1
}

# free_port → a port nobody listens on now, from the kernel.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_peer DIR [taskset-cpu] → sets PEER_PID and PEER_URL (DIR holds
# server.js and its node_modules).
start_peer() {
    local dir=$1 cpu=${2:-}
    local pin=()
    if [[ -n $cpu ]] && command -v taskset >/dev/null; then pin=(taskset -c "$cpu"); fi
    local port
    port=$(free_port)
    rm -f "$dir/peer.log"
    (cd "$dir" && exec "${pin[@]}" node server.js --port "$port" --bcrypt-cost 4) >"$dir/peer.log" 2>&1 &
    PEER_PID=$!
    PEER_URL=http://127.0.0.1:$port
    await_start "the Node.js peer" "$PEER_PID" "$dir/peer.log" grep -q listening "$dir/peer.log"
}

# start_limit BIN LOG [taskset-cpu] → sets LIMIT_PID and LIMIT_URL (BIN:
# the rust-limit peer's binary).
start_limit() {
    local bin=$1 log=$2 cpu=${3:-}
    local pin=() port
    if [[ -n $cpu ]] && command -v taskset >/dev/null; then pin=(taskset -c "$cpu"); fi
    port=$(free_port)
    "${pin[@]}" "$bin" "$port" >"$log" 2>&1 &
    LIMIT_PID=$!
    LIMIT_URL=http://127.0.0.1:$port
    await_start rust-limit "$LIMIT_PID" "$log" curl -sf -o /dev/null "$LIMIT_URL/healthz"
}

# stop_pid PID: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
    local pid=$1
    [[ -z $pid ]] && return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
