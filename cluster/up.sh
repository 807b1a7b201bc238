#!/usr/bin/env bash
# Starts the local three-node cluster and waits until every node is healthy
# (docker health status, i.e. `eventstore health` reports SERVING).
#
# Usage: cluster/up.sh [--build] [--timeout SECONDS]
#   --build            rebuild the image (cluster/build-image.sh) even if it exists
#   --timeout SECONDS  how long to wait for all nodes to be healthy (default 120)
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

build=0
timeout=120
while [[ $# -gt 0 ]]; do
    case "$1" in
        --build) build=1 ;;
        --timeout)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds"
            timeout="$2"
            shift
            ;;
        --timeout=*)
            timeout="${1#--timeout=}"
            [[ "${timeout}" =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds"
            ;;
        -h | --help)
            sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done

require_docker

if [[ ${build} -eq 1 ]] || ! image_exists "${ES_IMAGE}"; then
    log "building image ${ES_IMAGE}"
    EVENTSTORE_IMAGE="${ES_IMAGE}" "${ES_CLUSTER_DIR}/build-image.sh"
else
    bin="${EVENTSTORE_BIN:-${ES_REPO_ROOT}/target/release/eventstore}"
    created="$(docker image inspect --format '{{.Created}}' "${ES_IMAGE}")"
    if [[ -f "${bin}" ]] && [[ "$(stat -c %Y "${bin}")" -gt "$(date -d "${created}" +%s 2>/dev/null || echo 0)" ]]; then
        log "warning: ${bin} is newer than image ${ES_IMAGE}; use --build to repackage it"
    fi
fi

log "starting ${ES_SERVICES[*]} (project ${ES_PROJECT}, image ${ES_IMAGE})"
compose up -d --remove-orphans

# Prints "<state>/<health>" for a service's container, e.g. running/healthy.
service_status() {
    local id
    id="$(compose ps -q "$1" 2>/dev/null || true)"
    if [[ -z "${id}" ]]; then
        echo "missing/none"
        return
    fi
    docker inspect --format '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "${id}" 2>/dev/null ||
        echo "missing/none"
}

deadline=$((SECONDS + timeout))
last=""
while :; do
    line=""
    healthy=0
    failed=()
    for svc in "${ES_SERVICES[@]}"; do
        st="$(service_status "${svc}")"
        line+="${svc}=${st} "
        case "${st}" in
            running/healthy) healthy=$((healthy + 1)) ;;
            exited/* | dead/* | missing/*) failed+=("${svc}") ;;
        esac
    done
    if [[ "${line}" != "${last}" ]]; then
        log "${line% }"
        last="${line}"
    fi
    if [[ ${healthy} -eq ${#ES_SERVICES[@]} ]]; then
        break
    fi
    if [[ ${#failed[@]} -gt 0 ]]; then
        log "not running: ${failed[*]}; last log lines:"
        compose logs --no-color --tail 30 "${failed[@]}" >&2 || true
        exit 1
    fi
    if [[ ${SECONDS} -ge ${deadline} ]]; then
        log "timed out after ${timeout}s waiting for all nodes to be healthy; last log lines:"
        compose ps >&2 || true
        compose logs --no-color --tail 30 >&2 || true
        exit 1
    fi
    sleep 2
done

log "cluster is up: all ${#ES_SERVICES[@]} nodes healthy"
cat <<INFO
client gRPC:  127.0.0.1:18080  127.0.0.1:18081  127.0.0.1:18082
peer/admin:   127.0.0.1:19090  127.0.0.1:19091  127.0.0.1:19092
metrics:      http://127.0.0.1:19100/metrics  (19101, 19102; also /healthz, /readyz)
try:          target/release/eventstore cluster status --server 127.0.0.1:19090
              target/release/eventstore client --server 127.0.0.1:18080 --command save --scope Global --key k --value v --ttl 60
stop:         cluster/down.sh
INFO
