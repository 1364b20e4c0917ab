#!/usr/bin/env bash
# Long soak of the crash loop (loadgen/tests/crash_loop.rs): atedb under
# `ate-loadgen --acked-log`, SIGKILLed at random moments and restarted, then
# every acknowledged record checked and the chain verified.
#   ci/crash-loop.sh [CYCLES] [SEED]     (default 500 cycles, seed 1)
# CI runs the same test with 20 cycles as part of `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-500}"
seed="${2:-1}"
cargo build --release -p atedb --bin atedb
ATE_CRASH_CYCLES="$cycles" ATE_CRASH_SEED="$seed" \
    cargo test --release -p ate-loadgen --test crash_loop -- --nocapture
