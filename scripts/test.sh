#!/usr/bin/env bash
# Runs the whole test suite: unit, property and multi-process integration
# tests (all in the release profile, the one profile this project builds),
# every fuzz target for 15 s (FUZZ_SECONDS), the wire-contract check with an
# independently generated Python client, the offline validation of the
# Kubernetes manifests, and the fault-injection suite against a three-node
# cluster in containers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

cargo build --release --locked --workspace --all-targets
cargo test --release --locked --workspace -- --test-threads 2
# Every fuzz target for a short while (it links the librocksdb.a the release
# build above left, so nightly never compiles RocksDB).
FUZZ_SECONDS=${FUZZ_SECONDS:-15} scripts/fuzz.sh
tests/contract/run.sh
tests/manifests/validate.sh
cluster/faults.sh
