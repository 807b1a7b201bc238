#!/usr/bin/env bash
# The steady-load check: a temporary three-node cluster with the default
# settings under full write load for 10 minutes (64 clients spread over the
# three nodes, 128-byte Saves), then the number of elections it saw. A
# cluster whose election timeout is too short for the machine starts
# elections under load; this run must see none. Exits non-zero if the
# Raft term moved or the leader changed. Results and node logs: target/steady/.
# Usage: scripts/steady.sh [SECONDS] (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
scripts/setup.sh
# The same build as the tests (see scripts/test.sh), so RocksDB is compiled once;
# the load comes from the benchmark driver (cluster/bench).
cargo build --release --locked --workspace --all-targets
es=target/release/eventstore

. scripts/lib/nodes.sh
make_work steady
out=target/steady
keep_results() { # the results and the node logs, not the data
  rm -rf "$out"; mkdir -p "$out"
  cp -r "$work/out/." "$out/" 2>/dev/null || true
  cp "$work"/node-*.log "$out/" 2>/dev/null || true
}

echo "== three EventStore nodes (default timeouts)" >&2
start_eventstore_nodes "$es" "$work"
for i in 0 1 2; do
  wait_for "EventStore node $i" "$work/node-$i.log" "$es" health --server "127.0.0.1:${ports[i]}"
done

snapshot() { # terms and leaders of the three nodes, one line
  local i out=""
  for i in 0 1 2; do
    out="$out node$i:term=$(metric "${metrics[i]}" eventstore_raft_term),leader=$(metric "${metrics[i]}" eventstore_raft_leader_id)"
  done
  echo "${out# }"
}

before=$(snapshot)
echo "== before: $before" >&2
echo "== ${seconds} s of Saves, 64 clients over three nodes" >&2
status=0
es_list=""
for i in 0 1 2; do es_list="${es_list:+$es_list,}127.0.0.1:${ports[i]}"; done
target/release/eventstore-compare --eventstore "$es_list" --systems eventstore --ops save \
  --clients 64 --value-sizes 128 --keys 100000 --warmup 1s --duration "${seconds}s" \
  --fsync-dir "$work" --out "$work/out" --note "steady-load check" || status=1
after=$(snapshot)
echo "== after:  $after" >&2
cat "$work/out/table.md" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
  echo "steady: the load generator failed" >&2
  exit 1
fi
if [ "$before" != "$after" ]; then
  echo "steady: the cluster held an election under steady load" >&2
  grep -h "election\|vote" "$work"/node-*.log | head -n 20 >&2 || true
  exit 1
fi
echo "steady: no election in ${seconds} s of full load"
