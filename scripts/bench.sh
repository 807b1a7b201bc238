#!/usr/bin/env bash
# Benchmarks EventStore on this machine: starts a temporary single-node
# server and a temporary three-node cluster on 127.0.0.1 (free ports, data in
# a temporary directory), runs `eventstore bench` against each, and stops
# them. Extra arguments go to `eventstore bench` (e.g. --duration 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The same build as the tests (see scripts/test.sh), so RocksDB is compiled once.
cargo build --release --locked --workspace --all-targets
es=target/release/eventstore

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {
  for _ in $(seq 1 300); do
    if "$es" health --server "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "bench: $1 did not become ready" >&2
  return 1
}

echo "== single node"
port=$(free_port); peer=$(free_port)
"$es" serve --listen "127.0.0.1:$port" --peer-listen "127.0.0.1:$peer" --data-dir "$work/single" \
  --metrics-listen "127.0.0.1:$(free_port)" 2>"$work/single.log" &
pids+=($!)
wait_ready "127.0.0.1:$port"
"$es" bench --server "127.0.0.1:$port" --setup "1 node" "$@"

echo
echo "== three nodes (client connected to a follower or the leader, as it happens)"
declare -a ports peers
list=""
for i in 0 1 2; do
  ports[i]=$(free_port); peers[i]=$(free_port)
  list="${list:+$list,}$i=127.0.0.1:${peers[i]}"
done
for i in 0 1 2; do
  "$es" serve --node-id "$i" --listen "127.0.0.1:${ports[i]}" --peer-listen "127.0.0.1:${peers[i]}" \
    --peers "$list" --data-dir "$work/node-$i" --metrics-listen "127.0.0.1:$(free_port)" \
    2>"$work/node-$i.log" &
  pids+=($!)
done
for i in 0 1 2; do wait_ready "127.0.0.1:${ports[i]}"; done
"$es" bench --server "127.0.0.1:${ports[0]}" --setup "3 nodes" "$@"
