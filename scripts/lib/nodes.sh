# Shared by scripts/bench.sh, steady.sh and memory.sh (sourced, not run):
# a temporary directory cleaned up on exit, free ports, waiting for
# readiness, reading a metric, and a temporary three-node EventStore
# cluster on 127.0.0.1 with the default settings.

# make_work NAME: creates the temporary directory `work` (under BENCH_DIR,
# TMPDIR or /tmp). On exit the processes in `pids` are stopped, the
# caller's `keep_results` runs if it defined one, and `work` is removed.
make_work() {
  work=$(mktemp -d -p "${BENCH_DIR:-${TMPDIR:-/tmp}}" "eventstore-$1.XXXXXX")
  pids=()
  trap remove_work EXIT
}

remove_work() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if declare -F keep_results >/dev/null; then keep_results; fi
  rm -rf "$work"
}

metric() { # PORT NAME: the value of metric NAME on the metrics port PORT
  python3 -c 'import sys, urllib.request
for line in urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().splitlines():
    if line.startswith(sys.argv[2] + " "):
        print(int(float(line.split()[1]))); break' \
    "http://127.0.0.1:$1/metrics" "$2"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # NAME LOG COMMAND...: retries COMMAND for 30 s
  local name=$1 log=$2; shift 2
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$name did not become ready; the end of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

# start_eventstore_nodes ES WORK: starts three nodes of the binary ES with
# data and logs under WORK, appends their pids to `pids`, and sets
# `ports` (client), `peers` (peer) and `metrics` (metrics HTTP) per node.
# SERVE_ARGS (environment) adds flags to every node's `eventstore serve`.
start_eventstore_nodes() {
  local es=$1 work=$2 list="" i
  declare -ga ports peers metrics
  for i in 0 1 2; do
    ports[i]=$(free_port); peers[i]=$(free_port); metrics[i]=$(free_port)
    list="${list:+$list,}$i=127.0.0.1:${peers[i]}"
  done
  for i in 0 1 2; do
    "$es" serve --node-id "$i" --listen "127.0.0.1:${ports[i]}" --peer-listen "127.0.0.1:${peers[i]}" \
      --peers "$list" --data-dir "$work/node-$i" --metrics-listen "127.0.0.1:${metrics[i]}" \
      ${SERVE_ARGS:-} 2>"$work/node-$i.log" &
    pids+=($!)
  done
}
