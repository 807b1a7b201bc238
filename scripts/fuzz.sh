#!/usr/bin/env bash
# Runs every fuzz target in cluster/fuzz (cargo fuzz, libFuzzer) for
# FUZZ_SECONDS seconds each (default 60), or only the targets named as
# arguments, and exits non-zero if any of them crashed, printing the input
# that crashed it (kept in cluster/fuzz/artifacts/TARGET/). Each target's
# libFuzzer output is kept in target/fuzz/TARGET.log.
#
# It fuzzes a temporary copy of the committed seed corpus
# (cluster/fuzz/corpus/TARGET/seed-*), so a run leaves the tree clean.
#
# The fuzz build uses the nightly toolchain and would compile RocksDB's C++
# again (30 minutes on 2 cores); instead it links the librocksdb.a that the
# stable release build leaves in target/release/build/librocksdb-sys-*/out/,
# building that first if it is missing. cargo-fuzz is installed if missing.
#
#   scripts/fuzz.sh                       # every target, 60 s each
#   FUZZ_SECONDS=15 scripts/fuzz.sh       # what scripts/test.sh runs
#   scripts/fuzz.sh request storage_key   # some targets
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_DIR=cluster/fuzz
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(request storage_key log_entry peer_message snapshot_file apply_model)
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi
for t in "${targets[@]}"; do
    if [[ ! -f $FUZZ_DIR/fuzz_targets/$t.rs ]]; then
        echo "fuzz.sh: no fuzz target '$t' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done
if ! [[ $FUZZ_SECONDS =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: FUZZ_SECONDS must be a positive number of seconds, got '$FUZZ_SECONDS'" >&2
    exit 2
fi

find_rocksdb() {
    find target/release/build -path '*/librocksdb-sys-*/out/librocksdb.a' 2>/dev/null | head -n 1
}
lib=$(find_rocksdb)
if [[ -z $lib ]]; then
    echo "fuzz.sh: no librocksdb.a from a release build yet; building the release binary first"
    cargo build --release --locked -p eventstore
    lib=$(find_rocksdb)
fi
if [[ -z $lib ]]; then
    echo "fuzz.sh: the release build left no librocksdb.a under target/release/build" >&2
    exit 1
fi
export ROCKSDB_LIB_DIR="$PWD/$(dirname "$lib")"
export ROCKSDB_STATIC=1
echo "fuzz.sh: linking RocksDB from $ROCKSDB_LIB_DIR/librocksdb.a"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# cargo fuzz has no --locked: check that the committed lock file is whole.
cargo +nightly metadata --locked --format-version 1 \
    --manifest-path "$FUZZ_DIR/Cargo.toml" >/dev/null
start=$(date +%s)
cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR"
echo "fuzz.sh: fuzz build took $(($(date +%s) - start)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/eventstore-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

mkdir -p target/fuzz
failed=()
summary=()
for t in "${targets[@]}"; do
    corpus=$work/corpus/$t
    mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$t"
    if [[ -d $FUZZ_DIR/corpus/$t ]]; then
        cp "$FUZZ_DIR/corpus/$t"/seed-* "$corpus"/ 2>/dev/null || true
    fi
    seeds=$(find "$corpus" -type f | wc -l)
    log=target/fuzz/$t.log
    echo "fuzz.sh: $t: $FUZZ_SECONDS s from $seeds seeds"
    rc=0
    cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" "$t" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    first=$(grep -m1 -o 'cov: [0-9]*' "$log" | grep -o '[0-9]*' || echo '?')
    last=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    summary+=("$(printf '%-14s cov %6s -> %-6s runs %-10s exec/s %-7s' "$t" "$first" "$last" "$runs" "$speed")")
    if [[ $rc -ne 0 ]]; then
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | sed 's/Test unit written to //')
        echo "fuzz.sh: $t FAILED (exit $rc); the last lines of its output:" >&2
        tail -n 40 "$log" >&2
        echo "fuzz.sh: $t: the crashing input: ${artifact:-none written (see the output above)}" >&2
        failed+=("$t")
        summary[-1]+=" CRASHED: ${artifact:-?}"
    fi
done

echo
echo "fuzz.sh: libFuzzer's coverage (cov:) with the seeds alone -> at the end, ${FUZZ_SECONDS} s each"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crashed: ${failed[*]} (inputs in $FUZZ_DIR/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crashes"
