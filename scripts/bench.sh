#!/usr/bin/env bash
# Benchmarks EventStore against etcd on this machine: starts a temporary
# three-node EventStore cluster and a temporary three-member etcd on
# 127.0.0.1 (free ports, data in one temporary directory), runs
# `eventstore-compare` (cluster/bench) against both, and stops them.
# Installs Debian's etcd-server when `etcd` is missing. Extra arguments go
# to eventstore-compare (e.g. --quick, --duration 5s, --out DIR).
# BENCH_DIR picks where the temporary directory goes (default: $TMPDIR or
# /tmp); the fsync latency is measured there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v etcd >/dev/null 2>&1; then
  echo "bench: installing etcd-server" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
fi
# The same build as the tests (see scripts/test.sh), so RocksDB is compiled once.
cargo build --release --locked --workspace --all-targets
es=target/release/eventstore
compare=target/release/eventstore-compare

. scripts/lib/nodes.sh
make_work bench

echo "== three EventStore nodes" >&2
start_eventstore_nodes "$es" "$work"

etcd_healthy() {
  python3 -c 'import json, sys, urllib.request
r = json.load(urllib.request.urlopen(sys.argv[1] + "/health", timeout=1))
sys.exit(0 if r.get("health") == "true" else 1)' "$1"
}

echo "== three etcd members ($(etcd --version | head -n 1))" >&2
# Default heartbeat (100 ms) and election timeout (1 s). etcd keeps every
# revision until it is compacted: keep the last 10,000 and allow an 8 GiB
# backend, so 64 KiB values do not fill the default 2 GiB quota mid-run.
declare -a eclient epeer
initial=""
for i in 0 1 2; do
  eclient[i]=$(free_port); epeer[i]=$(free_port)
  initial="${initial:+$initial,}e$i=http://127.0.0.1:${epeer[i]}"
done
for i in 0 1 2; do
  etcd --name "e$i" --data-dir "$work/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:${eclient[i]}" \
    --advertise-client-urls "http://127.0.0.1:${eclient[i]}" \
    --listen-peer-urls "http://127.0.0.1:${epeer[i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${epeer[i]}" \
    --initial-cluster "$initial" --initial-cluster-state new \
    --initial-cluster-token "bench-$$" \
    --auto-compaction-mode revision --auto-compaction-retention 10000 \
    --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) \
    --logger zap --log-level warn \
    >"$work/etcd-$i.log" 2>&1 &
  pids+=($!)
done

for i in 0 1 2; do
  wait_for "EventStore node $i" "$work/node-$i.log" "$es" health --server "127.0.0.1:${ports[i]}"
  wait_for "etcd member e$i" "$work/etcd-$i.log" etcd_healthy "http://127.0.0.1:${eclient[i]}"
done

es_list=""; etcd_list=""
for i in 0 1 2; do
  es_list="${es_list:+$es_list,}127.0.0.1:${ports[i]}"
  etcd_list="${etcd_list:+$etcd_list,}127.0.0.1:${eclient[i]}"
done
"$compare" --eventstore "$es_list" --etcd "$etcd_list" --fsync-dir "$work" "$@"
