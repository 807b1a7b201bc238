#!/usr/bin/env bash
# Measures two or more builds of `eventstore` against each other on this
# machine: for each of ROUNDS rounds, and each binary in turn, starts a
# fresh three-node cluster of that binary on 127.0.0.1 (free ports, data in
# a temporary directory), runs `eventstore-compare --systems eventstore`
# with the remaining arguments, prints the result rows with the binary's
# name, and stops the cluster. Binaries take turns round by round, so that
# whatever else the machine does hits all of them; include `--ops
# baseline,...` and compare each row with its own run's baseline.
#
#   scripts/compare-builds.sh ROUNDS BINARY... -- COMPARE-ARGS...
#   scripts/compare-builds.sh 3 /tmp/es-before /tmp/es-after -- \
#       --ops baseline,load --clients 64 --value-sizes 128 --duration 3s
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#bins[@]} -gt 0 ] || { echo "usage: $0 ROUNDS BINARY... -- COMPARE-ARGS..." >&2; exit 2; }
cargo build --release --locked -p eventstore-bench
compare=target/release/eventstore-compare

. scripts/lib/nodes.sh
for r in $(seq 1 "$rounds"); do
  for b in "${bins[@]}"; do
    make_work compare
    start_eventstore_nodes "$b" "$work"
    for i in 0 1 2; do
      wait_for "node $i" "$work/node-$i.log" "$b" health --server "127.0.0.1:${ports[i]}"
    done
    "$compare" --systems eventstore \
      --eventstore "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" \
      --fsync-dir "$work" --fsync-duration 0.5s --out "$work/out" "$@" >/dev/null
    grep -E '^\| (baseline|save|load|delete) ' "$work/out/table.md" |
      awk -F'|' -v r="$r" -v b="$b" '{ printf "round %s  %-28s %-9s %-7s %4s clients  %8s ops/s  p50/p99/p99.9 %s ms\n", r, b, $2, $3, $4, $5, $9 }'
    remove_work
    trap - EXIT
  done
done
