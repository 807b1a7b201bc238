#!/usr/bin/env bash
# Checks the wire contract with a client generated independently from
# proto/eventstore.proto by the reference protobuf compiler for Python
# (grpcio-tools), against the release binary. Installs its tools into a
# cached virtualenv.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${XDG_CACHE_HOME:-$HOME/.cache}/eventstore-ci/contract-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import grpc_tools' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q grpcio==1.85.1 grpcio-tools==1.85.1
fi

bin=target/release/eventstore
[ -x "$bin" ] || cargo build --release --locked --workspace --all-targets

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$gen" --grpc_python_out="$gen" proto/eventstore.proto
PYTHONPATH="$gen" "$venv/bin/python" tests/contract/contract_test.py "$bin"
