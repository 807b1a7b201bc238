# shellcheck shell=bash
# Shared helpers for the local docker-compose cluster scripts.
# Source it; do not execute it.

# Repository root, resolved from this file's location so callers work from any cwd.
ES_CLUSTER_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ES_REPO_ROOT="$(cd -- "${ES_CLUSTER_DIR}/.." && pwd -P)"
ES_COMPOSE_FILE="${ES_CLUSTER_DIR}/docker-compose.yml"
ES_IMAGE="${EVENTSTORE_IMAGE:-eventstore:local}"
ES_PROJECT="${COMPOSE_PROJECT_NAME:-eventstore}"
# shellcheck disable=SC2034 # used by the scripts that source this file
ES_SERVICES=(eventstore-0 eventstore-1 eventstore-2)
export ES_CLUSTER_DIR ES_REPO_ROOT ES_COMPOSE_FILE ES_IMAGE ES_PROJECT

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_docker() {
    command -v docker >/dev/null 2>&1 || die "docker is not installed"
    docker info >/dev/null 2>&1 || die "cannot reach the docker daemon (is it running, and may this user use it?)"
}

# Prints the compose command words, one per line: "docker compose" (v2 plugin)
# when available, otherwise the standalone "docker-compose".
detect_compose() {
    if docker compose version >/dev/null 2>&1; then
        printf '%s\n' docker compose
    elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
        printf '%s\n' docker-compose
    else
        die "neither 'docker compose' nor 'docker-compose' is available"
    fi
}

# compose ARGS... runs compose against this cluster's file and project name.
compose() {
    if [[ -z "${ES_COMPOSE_CMD+x}" ]]; then
        mapfile -t ES_COMPOSE_CMD < <(detect_compose)
        [[ ${#ES_COMPOSE_CMD[@]} -gt 0 ]] || exit 1
    fi
    EVENTSTORE_IMAGE="${ES_IMAGE}" \
        "${ES_COMPOSE_CMD[@]}" --project-name "${ES_PROJECT}" --file "${ES_COMPOSE_FILE}" "$@"
}

image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}
