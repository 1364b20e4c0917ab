#!/usr/bin/env bash
# The checks CI runs, in order: lints, then the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The README's test command, exactly:
cargo test --workspace
