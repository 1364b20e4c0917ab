#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each, starting
# from the committed seed corpora (fuzz/seeds, made from real data by
# `cargo +nightly run --release --example make_seeds` in fuzz/). New inputs
# go to fuzz/corpus (not committed); a crash leaves fuzz/artifacts/TARGET/
# and fails the run: turn it into a regression test, then fix it.
#   ci/fuzz.sh [SECONDS] [TARGET...]      (default 30 s, every target)
# Long runs: ci/fuzz.sh 3600 segment_scan   (or `cargo +nightly fuzz run`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
if ! rustup toolchain list | grep -q nightly && ! rustup toolchain install nightly --profile minimal; then
    echo "SKIPPED fuzzing: no nightly toolchain and none installable here" >&2
    exit 0
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="corpus/$target.log"
    # -rss_limit_mb: an input that makes the code allocate without bound is a finding.
    if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        echo "$target: FAILED (fuzz/$log, fuzz/artifacts/$target)"
        tail -40 "$log"
        status=1
    fi
    runs="$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')"
    rss="$(grep -m1 '^stat::peak_rss_mb' "$log" | awk '{print $2}')"
    echo "$target: ${runs:-?} inputs in ${seconds} s, peak RSS ${rss:-?} MiB, corpus $(ls "corpus/$target" | wc -l)"
done
exit "$status"
