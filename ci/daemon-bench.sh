#!/usr/bin/env bash
# The daemon targets (D1-D5) in one invocation, against Redis and both
# JetStream servers, as docs/benchmarks.md records them:
#   ci/daemon-bench.sh [OUT_DIR]      (default: ./bench-out)
# Every command gets a fresh atedb (default settings, data in a temporary
# directory) and every workload freshly restarted peers (ci/peers.sh), so no
# system inherits another's leftovers. Writes each run's table, JSON and HTML
# report into OUT_DIR. DURATION (seconds per run, default 6) shortens it.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-bench-out}" && cd "${1:-bench-out}" && pwd)"
duration="${DURATION:-6}"
listen="127.0.0.1:5000"
work="$(mktemp -d)"
atedb_pid=""

cleanup() {
    if [ -n "$atedb_pid" ]; then kill -INT "$atedb_pid" 2>/dev/null || true; wait "$atedb_pid" 2>/dev/null || true; fi
    bash "$root/ci/peers.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p atedb -p ate-loadgen --manifest-path "$root/Cargo.toml"
bin="$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"

fresh_peers() {
    bash "$root/ci/peers.sh" stop >/dev/null
    # Its servers keep the script's output open: send theirs elsewhere.
    bash "$root/ci/peers.sh" start >"$work/peers.log" 2>&1 </dev/null
}

# loadgen NAME ARGS...: a fresh atedb, then `ate-loadgen ARGS` against it.
loadgen() {
    local name="$1"
    shift
    local data="$work/data"
    rm -rf "$data"
    mkdir -p "$data"
    printf 'data = "%s"\nlisten = "%s"\n' "$data" "$listen" >"$work/atedb.toml"
    "$bin/atedb" run --config "$work/atedb.toml" >"$out/$name.atedb.log" 2>&1 &
    atedb_pid=$!
    for _ in $(seq 100); do [ -s "$data/fingerprint" ] && [ -s "$data/admin.token" ] && break; sleep 0.1; done
    "$bin/ate-loadgen" "$@" --token-file "$data/admin.token" --fingerprint "$(cat "$data/fingerprint")" \
        --message-size 1024 --duration "$duration" --json "$out/$name.json" >"$out/$name.txt"
    kill -INT "$atedb_pid"
    wait "$atedb_pid" || true
    atedb_pid=""
    echo "== $name"
    cat "$out/$name.txt"
}

redis="--peer redis://127.0.0.1:6379"
nats_always="--peer nats://127.0.0.1:4222"
nats_default="--peer nats://127.0.0.1:4223"
date -u +"start %F %H:%M:%S UTC, commit $(git -C "$root" rev-parse --short HEAD)"

fresh_peers
loadgen d1 compare --workload ingest --target "tcp://$listen/d1" --connections 1 --in-flight 16 --batch 64 \
    --warmup 1 --rounds 2 $redis $nats_always $nats_default --html "$out/d1.html"
# One event per commit, 64 in flight: what a commit costs on its own.
fresh_peers
loadgen d1-single compare --workload ingest --target "tcp://$listen/d1s" --connections 1 --in-flight 64 --batch 1 \
    --warmup 1 --rounds 1 $redis $nats_always $nats_default --html "$out/d1-single.html"
# Half the D1 target rate, open loop (2,340 commits of 64 = 150k events/s).
# The first run is a discarded warm-up: on this VM it can stall. ATE runs
# alone: the peers stop first, and what they wrote reaches the disk before
# the runs, so their background flushes (Debian's JetStream syncs every two
# minutes) are not timed as ATE's tail.
bash "$root/ci/peers.sh" stop >/dev/null
sync
for run in 0 1 2 3; do
    loadgen "d1-open-$run" run --workload ingest --target "tcp://$listen/d1o" --connections 1 --in-flight 16 \
        --batch 64 --rate 2340 --warmup 2
done
fresh_peers
loadgen d3 compare --workload cache --target "tcp://$listen/d3" --keys 100000 --read-ratio 0.9 --connections 1 \
    --in-flight 1 --warmup 1 --rounds 2 $redis $nats_default --html "$out/d3.html"
fresh_peers
loadgen d4 compare --workload fanout --target "tcp://$listen/d4" --connections 1 --in-flight 20 --publishers 4 \
    --batch 64 --warmup 1 --rounds 1 $redis $nats_default --html "$out/d4.html"
fresh_peers
loadgen d5 compare --workload queue --target "tcp://$listen/d5" --connections 1 --in-flight 8 --batch 16 \
    --warmup 1 --rounds 1 $redis $nats_always $nats_default --html "$out/d5.html"
# Consumers that fetch 100 at a time, as the embedded D5 does (Kafka's
# consumers poll up to 500 by default).
fresh_peers
loadgen d5-100 compare --workload queue --target "tcp://$listen/d5b" --connections 1 --in-flight 8 --batch 100 \
    --warmup 1 --rounds 1 $redis $nats_default --html "$out/d5-100.html"
date -u +"end %F %H:%M:%S UTC"
