#!/usr/bin/env bash
# Runs the whole test suite: unit, property and multi-process integration
# tests (all in the release profile, the one profile this project builds),
# the wire-contract check with an independently generated Python client, and
# the offline validation of the Kubernetes manifests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

cargo build --release --locked --all-targets
cargo test --release --locked -- --test-threads 2
tests/contract/run.sh
if [ -x tests/manifests/validate.sh ]; then
  tests/manifests/validate.sh
fi
