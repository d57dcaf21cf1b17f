# Shared by smoke.sh and compare.sh: start and stop throwaway servers on
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
    for _ in $(seq 1 100); do
        CONFAB_URL=$(sed -n 's/^confab listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$dir.log" | head -n1)
        [[ -n $CONFAB_URL ]] && return 0
        kill -0 "$CONFAB_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "confab did not start:" >&2
    cat "$dir.log" >&2
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
    for _ in $(seq 1 100); do
        grep -q listening "$dir/peer.log" 2>/dev/null && return 0
        kill -0 "$PEER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "the Node.js peer did not start:" >&2
    cat "$dir/peer.log" >&2
    return 1
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
