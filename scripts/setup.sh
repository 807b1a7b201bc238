#!/usr/bin/env bash
# Installs what building EventStore needs on a fresh Debian/Ubuntu machine:
# libclang (for RocksDB's bindings), a C++ compiler and protoc (etcd-client,
# in the benchmark package cluster/bench, compiles etcd's protos with it),
# and what its tests need: Python's venv (the wire-contract check) and libfaketime (the
# clock-skew tests shift one node's wall clock). Safe to run again.
set -euo pipefail

need=()
if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
  need+=(libclang-dev)
fi
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# The wire-contract check makes a Python virtualenv.
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
else
  need+=(python3 python3-venv)
fi

# tests/clock_skew.rs runs one node under libfaketime.
if ! compgen -G '/usr/lib/*/faketime/libfaketimeMT.so.1' >/dev/null \
    && [ ! -e /usr/lib/faketime/libfaketimeMT.so.1 ]; then
  need+=(faketime)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
