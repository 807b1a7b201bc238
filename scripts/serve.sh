#!/usr/bin/env bash
# Builds and runs a single-node EventStore on its defaults: clients on
# 0.0.0.0:8080, peers on 0.0.0.0:9090, data in ./data. Extra arguments are
# passed to `eventstore serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked --bin eventstore -- serve "$@"
