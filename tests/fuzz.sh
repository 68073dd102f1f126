#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target in fuzz/ for FUZZ_SECONDS each
# (default 60), starting from the committed seed corpus in fuzz/corpus/.
# cargo-fuzz needs nightly-only flags (-Zsanitizer=address); this machine has
# one stable toolchain and no way to fetch another, so RUSTC_BOOTSTRAP=1 lets
# that toolchain accept them. A crash fails the run and leaves its input in
# fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "tests/fuzz.sh: installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
# New inputs go to a scratch copy, so runs never dirty the committed corpus.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in $(cargo fuzz list); do
    mkdir -p "$work/$target"
    cp fuzz/corpus/"$target"/* "$work/$target/"
    echo "tests/fuzz.sh: $target for ${seconds}s" >&2
    log="$work/$target.log"
    if ! cargo fuzz run "$target" "$work/$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "tests/fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)" "$log" || true
done
