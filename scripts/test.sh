#!/usr/bin/env bash
# Runs the whole test suite: unit, property and multi-process integration
# tests (all in the release profile, the one profile this project builds),
# the wire-contract check with an independently generated Python client, the
# offline validation of the Kubernetes manifests, and the fault-injection
# suite against a three-node cluster in containers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

cargo build --release --locked --workspace --all-targets
cargo test --release --locked --workspace -- --test-threads 2
tests/contract/run.sh
tests/manifests/validate.sh
cluster/faults.sh
