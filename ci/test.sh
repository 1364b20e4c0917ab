#!/usr/bin/env bash
# The checks CI runs, in order: lints, then the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The README's test command, exactly; its output is also summed up below so
# the last line states how many tests ran (doc-test runs of empty crates
# would otherwise close the log with "0 passed").
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed; exit (failed > 0 || passed == 0) }' "$log"
