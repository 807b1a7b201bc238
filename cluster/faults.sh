#!/usr/bin/env bash
# Fault-injection suite with a linearizability check, against a fresh local
# three-node cluster (docker compose project "eventstore").
#
# Builds the release binaries (cargo decides what is stale), packages the
# image (cluster/build-image.sh), recreates the cluster with empty volumes
# (cluster/up.sh), runs target/release/eventstore-faults (concurrent clients
# on all three nodes while it kills, pauses, partitions and restarts nodes),
# then tears the cluster down, whatever happened.
#
# Usage: cluster/faults.sh [eventstore-faults flags...]
#   e.g. cluster/faults.sh --rounds 1 --scenarios kill-leader,partition-leader
#        target/release/eventstore-faults --help   lists the flags
# Output (target/faults/): report.json, history.jsonl, timeline.svg and
# timeline.png (both drawn by the runner), summary.txt, teardown.log.
# Exit status: 0 when every scenario passed, non-zero otherwise. The last
# line printed is "faults: N passed, M failed".
# Environment:
#   FAULTS_TIME_LIMIT  hard limit for the runner in seconds (default 840)
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

OUT="${ES_REPO_ROOT}/target/faults"
RUNNER="${ES_REPO_ROOT}/target/release/eventstore-faults"
TIME_LIMIT="${FAULTS_TIME_LIMIT:-840}"
[[ "${TIME_LIMIT}" =~ ^[0-9]+$ ]] || die "FAULTS_TIME_LIMIT must be a number of seconds"

cluster_started=0

# Tears the cluster down (unfreezing any paused container first, which
# compose cannot stop) and prints the summary line last.
# shellcheck disable=SC2317 # invoked by the EXIT trap
finish() {
    local rc=$?
    set +e
    if [[ ${cluster_started} -eq 1 ]]; then
        local paused=()
        mapfile -t paused < <(docker ps -q --filter "label=com.docker.compose.project=${ES_PROJECT}" \
            --filter status=paused 2>/dev/null)
        if [[ ${#paused[@]} -gt 0 ]]; then
            docker unpause "${paused[@]}" >/dev/null 2>&1
        fi
        log "tearing down the cluster"
        if ! compose down --volumes --remove-orphans --timeout 30 >"${OUT}/teardown.log" 2>&1; then
            log "teardown failed; see ${OUT}/teardown.log"
            [[ ${rc} -ne 0 ]] || rc=1
        fi
    fi
    local passed=0 failed=0
    if [[ -s "${OUT}/summary.txt" ]]; then
        read -r passed failed <"${OUT}/summary.txt" || true
    fi
    if [[ ${rc} -ne 0 && ${failed} -eq 0 ]]; then
        failed=1 # the run itself failed (setup, build, runner crash)
    fi
    printf 'faults: %s passed, %s failed\n' "${passed}" "${failed}"
    exit "${rc}"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

require_docker
command -v cargo >/dev/null 2>&1 || die "cargo is required to build the binaries"
mkdir -p "${OUT}"
rm -f -- "${OUT}/summary.txt" "${OUT}/report.json" "${OUT}/history.jsonl" \
    "${OUT}/timeline.svg" "${OUT}/timeline.png" "${OUT}/teardown.log"

log "building release binaries"
# The same build as the tests (scripts/test.sh): building only the two
# binaries would resolve dependency features differently and compile
# RocksDB a second time.
(cd "${ES_REPO_ROOT}" && cargo build --release --locked --workspace --all-targets)

EVENTSTORE_BIN="${ES_REPO_ROOT}/target/release/eventstore" "${ES_CLUSTER_DIR}/build-image.sh"

# A fresh cluster: the checks assume empty volumes and no other clients.
cluster_started=1
log "removing any previous ${ES_PROJECT} cluster and its volumes"
compose down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true
"${ES_CLUSTER_DIR}/up.sh" --timeout 120 >/dev/null

log "running the fault scenarios"
rc=0
timeout --foreground --signal=INT --kill-after=30 "${TIME_LIMIT}" \
    "${RUNNER}" --project "${ES_PROJECT}" --out "${OUT}" "$@" || rc=$?

if [[ ${rc} -eq 124 ]]; then
    log "the runner exceeded ${TIME_LIMIT}s"
fi
exit "${rc}"
