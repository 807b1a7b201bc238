#!/usr/bin/env bash
# Builds and runs a single-node EventStore on its defaults: clients on
# 0.0.0.0:8080, peers on 0.0.0.0:9090, data in ./data. Extra arguments are
# passed to `eventstore serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The same build as the tests (scripts/test.sh): building only the binary
# would resolve dependency features differently and compile RocksDB twice.
cargo build --release --locked --workspace --all-targets
exec target/release/eventstore serve "$@"
