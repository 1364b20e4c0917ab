#!/usr/bin/env bash
# Peers for `ate-loadgen compare` and the peer tests, on loopback:
#   ci/peers.sh start   installs redis-server and nats-server (Debian) if
#                       absent and starts them with ATE-equivalent durability
#   ci/peers.sh stop    stops what `start` started
# Redis: appendonly yes, appendfsync always (every acknowledged write is
# fsync'd, like ATE's Sync/Batched acks). NATS: JetStream with file storage
# and sync_interval: always (nats-server 2.10+; older servers sync every
# two minutes, which the report then says).
set -euo pipefail

state="${ATE_PEERS_DIR:-/tmp/ate-peers}"
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    local packages=()
    command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
    command -v nats-server >/dev/null 2>&1 || packages+=(nats-server)
    if [ ${#packages[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    fi
    # Fresh state each time: benchmark leftovers would skew the next run.
    listening 6379 || rm -rf "$state/redis"
    listening 4222 || rm -rf "$state/nats"
    mkdir -p "$state/redis" "$state/nats"
    if listening 6379; then
        echo "redis: something already listens on 127.0.0.1:6379; using it"
    else
        redis-server --bind 127.0.0.1 --port 6379 --dir "$state/redis" --appendonly yes \
            --appendfsync always --save '' --daemonize yes --pidfile "$state/redis.pid" \
            --logfile "$state/redis.log"
    fi
    if listening 4222; then
        echo "nats: something already listens on 127.0.0.1:4222; using it"
    else
        local sync=""
        if nats-server --help 2>&1 | grep -q sync_interval || nats-server --version | grep -qE 'v2\.(1[0-9]|[2-9][0-9])'; then
            sync="sync_interval: always"
        fi
        cat > "$state/nats.conf" <<CONF
listen: 127.0.0.1:4222
jetstream {
    store_dir: "$state/nats"
    $sync
}
CONF
        nats-server -c "$state/nats.conf" -P "$state/nats.pid" -l "$state/nats.log" &
        disown
    fi
    for port in 6379 4222; do
        for _ in $(seq 50); do listening "$port" && break; sleep 0.1; done
        listening "$port" || { echo "nothing listens on $port" >&2; exit 1; }
    done
    echo "peers: redis on 127.0.0.1:6379, nats on 127.0.0.1:4222 (state in $state)"
}

stop() {
    for name in redis nats; do
        if [ -f "$state/$name.pid" ]; then
            kill "$(cat "$state/$name.pid")" 2>/dev/null || true
            rm -f "$state/$name.pid"
        fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
