#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with the Rust
# toolchain. The engine tests need nothing beyond Rust itself; the peer
# servers for loadgen comparisons (redis-server, nats-server) are installed
# and started by ci/peers.sh.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "cargo is missing: install the Rust toolchain (1.85 or newer) first" >&2
    exit 1
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    echo "clippy is missing: rustup component add clippy" >&2
    exit 1
fi
# Packages the tests use, installed only when absent (apt needs root).
packages=()
for tool in git; do
    need "$tool" || packages+=("$tool")
done
if [ ${#packages[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi
