#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (issue 8): frame_decode, rest_bodies,
# media_sniff.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# The default, 20 s per target, is the short CI run; run longer by hand,
# e.g. `scripts/fuzz.sh 600` or `scripts/fuzz.sh 300 media_sniff`.
# Environment: FUZZ_SANITIZER=none|address (default none: a faster build
# and run, and missive has no `unsafe` of its own; `address` also works on
# stable and checks the C/unsafe code of dependencies, and its malloc hooks
# catch single huge allocations even when their pages are never touched).
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer, sancov passes);
# the stable toolchain accepts them with RUSTC_BOOTSTRAP=1. The build has
# its own target dir (fuzz/target) and workspace (fuzz/Cargo.toml).
#
# Each target fuzzes into a scratch corpus (fuzz/target/corpus/<target>),
# seeded from the committed seeds in fuzz/corpus/<target>, which it never
# writes to. A crash, panic, OOM (-rss_limit_mb) or slow input
# (-timeout) fails the script; libFuzzer prints the input and cargo-fuzz
# saves it under fuzz/artifacts/<target>/. Reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none <target> <artifact>
# (from fuzz/), fix it, and add the input as a regression test next to the
# code it broke.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-20}"
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
    exit 2
fi
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decode rest_bodies media_sniff)
fi
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q ' 0\.13\.2$'; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

echo "== building fuzz targets (sanitizer: $sanitizer)"
cargo fetch --locked # fuzz/Cargo.lock is used as committed, never re-resolved
cargo fuzz build --sanitizer "$sanitizer"

for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    scratch="target/corpus/$target"
    mkdir -p "$scratch"
    log="target/fuzz-$target.log"
    # -timeout: one input may take at most 10 s (the largest images the
    # server accepts take a few seconds); -rss_limit_mb: the process may
    # not grow past 2 GiB (a decode is bounded to 256 MiB). libFuzzer's
    # progress lines go to the log; its summary is printed.
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzzing $target FAILED: the input is in fuzz/artifacts/$target/, the log in fuzz/$log"
        exit 1
    fi
    grep -E '^(Done|stat::)' "$log" || true
done
echo "== fuzzing ok"
