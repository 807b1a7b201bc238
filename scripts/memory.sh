#!/usr/bin/env bash
# Memory and restart of one node holding many values: starts one node with
# its defaults (extra arguments go to `eventstore serve`, e.g.
# --cache-mib 32), writes KEYS 256-byte values with 64 clients (every key
# once, then again in turn until DURATION has passed), then prints the
# resident set, the live keys and the size on disk, stops the node with
# SIGTERM, restarts it on the same data directory, and prints how long it
# took to serve again and its resident set after 10 s of Loads.
# KEYS (default 1000000) and DURATION (default 180s) come from the
# environment.
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${KEYS:-1000000}
duration=${DURATION:-180s}
scripts/setup.sh
# The same build as the tests (see scripts/test.sh), so RocksDB is compiled once.
cargo build --release --locked --workspace --all-targets
es=target/release/eventstore

. scripts/lib/nodes.sh
make_work memory
port=$(free_port); peer=$(free_port); metrics=$(free_port)

start() { # starts the node; sets `pid`
  "$es" serve --listen "127.0.0.1:$port" --peer-listen "127.0.0.1:$peer" \
    --data-dir "$work/data" --metrics-listen "127.0.0.1:$metrics" "$@" \
    2>>"$work/node.log" &
  pid=$!
  pids+=("$pid")
}
rss_mib() { awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$pid/status"; }
bench() { # PHASE DURATION
  "$es" bench --server "127.0.0.1:$port" --phases "$1" --concurrency 64 --value-bytes 256 \
    --keys "$keys" --ttl 7200 --duration "$2"
}

start "$@"
wait_for "the node" "$work/node.log" "$es" health --server "127.0.0.1:$port"
echo "== Saves: $keys keys, 256-byte values, 64 clients, $duration" >&2
bench save "$duration"
echo "resident after the Saves: $(rss_mib) MiB"
echo "live keys (estimate): $(metric "$metrics" eventstore_keys_estimate)"
echo "on disk: $(du -sm "$work/data" | cut -f1) MiB"

kill -TERM "$pid"
wait "$pid" || true
started=$(date +%s.%N)
start "$@"
wait_for "the restarted node" "$work/node.log" "$es" health --server "127.0.0.1:$port"
echo "restart until serving: $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$started" "$(date +%s.%N)") s"
echo "resident after restart: $(rss_mib) MiB"
bench load 10s >/dev/null
echo "resident after 10 s of Loads: $(rss_mib) MiB"
