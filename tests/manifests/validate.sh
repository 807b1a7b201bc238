#!/usr/bin/env bash
# Validates the Kubernetes manifests offline and cross-checks them against the
# compose cluster. Exits non-zero on any error.
#
#   1. renders deploy/kubernetes (kubectl kustomize, or a plain concatenation of
#      the kustomization's resources when kubectl is missing),
#   2. validates every rendered object and every example against the Kubernetes
#      JSON schemas (kubernetes-validate, strict) for each version in
#      K8S_VERSIONS (default "1.28.0 1.37.0"),
#   3. checks names, selectors, ports, peers and hardening for consistency,
#      including cluster/docker-compose.yml,
#   4. renders deploy/kubernetes with the TLS component
#      (components/tls), validates it against the schemas, and checks that
#      the Secrets, mounts, environment and cert-manager example fit,
#   5. proves the checks can fail: broken manifests must be rejected,
#   6. runs `compose config` on the compose file when a compose tool exists.
#
# Tools are installed from tests/manifests/requirements.txt into a cached venv:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/eventstore-ci/venv
set -euo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd -- "${HERE}/../.." && pwd -P)"
KDIR="${ROOT}/deploy/kubernetes"
COMPOSE_FILE="${ROOT}/cluster/docker-compose.yml"
REQUIREMENTS="${HERE}/requirements.txt"
CHECK="${HERE}/check_manifests.py"
read -r -a K8S_VERSIONS <<<"${K8S_VERSIONS:-1.28.0 1.37.0}"
CACHE_DIR="${XDG_CACHE_HOME:-${HOME}/.cache}/eventstore-ci"
VENV="${CACHE_DIR}/venv"
PYTHON="${PYTHON:-python3}"

# KUBECTL= (empty) forces the fallback renderer.
KUBECTL="${KUBECTL-kubectl}"

failures=0
steps=0
failed_steps=0
step_failed=0
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    failures=$((failures + 1))
    if [[ ${step_failed} -eq 0 ]]; then
        step_failed=1
        failed_steps=$((failed_steps + 1))
    fi
}
step() { steps=$((steps + 1)); step_failed=0; printf '\n== %s\n' "$*"; }

# --- tools -------------------------------------------------------------------
# The venv is rebuilt whenever requirements.txt changes (its hash is stamped).
req_hash="$(sha256sum "${REQUIREMENTS}" | cut -d' ' -f1)"
if [[ ! -x "${VENV}/bin/python" || "$(cat "${VENV}/.requirements.sha256" 2>/dev/null || true)" != "${req_hash}" ]]; then
    printf 'installing validation tools into %s\n' "${VENV}"
    rm -rf -- "${VENV}"
    mkdir -p -- "${CACHE_DIR}"
    "${PYTHON}" -m venv "${VENV}"
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-virtualenv -r "${REQUIREMENTS}"
    printf '%s\n' "${req_hash}" >"${VENV}/.requirements.sha256"
fi
VPY="${VENV}/bin/python"
printf 'kubernetes-validate %s, schemas for Kubernetes %s\n' \
    "$("${VPY}" -c 'import kubernetes_validate as k; print(k.__version__)')" "${K8S_VERSIONS[*]}"
schema_args=()
for v in "${K8S_VERSIONS[@]}"; do schema_args+=(--k8s-version "${v}"); done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/eventstore-manifests.XXXXXX")"
trap 'rm -rf -- "${WORK}"' EXIT
RENDERED="${WORK}/rendered.yaml"
cd -- "${ROOT}"

# --- 1. render ---------------------------------------------------------------
step "render ${KDIR#"${ROOT}/"}"
# The fallback renderer also fails on a manifest file missing from resources.
if ! "${VPY}" "${CHECK}" render "${KDIR}" >"${WORK}/concatenated.yaml"; then
    fail "kustomization resources"
fi
if [[ -n "${KUBECTL}" ]] && command -v "${KUBECTL}" >/dev/null 2>&1; then
    if "${KUBECTL}" kustomize "${KDIR}" >"${RENDERED}"; then
        echo "rendered with kubectl kustomize ($(grep -c '^kind:' "${RENDERED}") objects)"
    else
        fail "${KUBECTL} kustomize ${KDIR}"
    fi
else
    echo "kubectl not found: validating the kustomization's resources as listed"
    cp "${WORK}/concatenated.yaml" "${RENDERED}"
fi

# --- 2. schemas --------------------------------------------------------------
step "schema validation (strict)"
examples=()
if [[ -d "${KDIR}/examples" ]]; then
    mapfile -t examples < <(find "${KDIR}/examples" -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
fi
"${VPY}" "${CHECK}" schema "${schema_args[@]}" "${RENDERED}" "${examples[@]}" || fail "schema validation"

# --- 3. consistency ----------------------------------------------------------
step "consistency (manifests and compose)"
"${VPY}" "${CHECK}" consistency "${RENDERED}" "${COMPOSE_FILE}" "${KDIR}" || fail "consistency checks"

# --- 4. the TLS component ------------------------------------------------------
step "TLS component (components/tls)"
CDIR="${KDIR}/components/tls"
TLS_RENDERED="${WORK}/rendered-tls.yaml"
if [[ -n "${KUBECTL}" ]] && command -v "${KUBECTL}" >/dev/null 2>&1; then
    # kustomize takes only relative paths to other kustomizations.
    mkdir -p -- "${WORK}/overlay"
    cat >"${WORK}/overlay/kustomization.yaml" <<YAML
resources:
  - $(realpath --relative-to="${WORK}/overlay" "${KDIR}")
components:
  - $(realpath --relative-to="${WORK}/overlay" "${CDIR}")
YAML
    if "${KUBECTL}" kustomize "${WORK}/overlay" >"${TLS_RENDERED}"; then
        echo "rendered base + component with kubectl kustomize"
    else
        fail "${KUBECTL} kustomize base + components/tls"
    fi
else
    echo "kubectl not found: merging the component's patches into the resources"
    "${VPY}" "${CHECK}" render-component "${RENDERED}" "${CDIR}" >"${TLS_RENDERED}" || fail "render components/tls"
fi
"${VPY}" "${CHECK}" schema "${schema_args[@]}" "${TLS_RENDERED}" || fail "schema validation with components/tls"
"${VPY}" "${CHECK}" tls "${TLS_RENDERED}" "${CDIR}" || fail "TLS component checks"

# --- 5. the checks must be able to fail ---------------------------------------
step "negative checks (each broken input must be rejected)"
# expect_reject WHAT PATTERN CMD...: CMD must fail, and its output must contain
# PATTERN (so a broken input is rejected for the intended reason).
expect_reject() {
    local what="$1" pattern="$2"
    shift 2
    if "$@" >"${WORK}/negative.log" 2>&1; then
        fail "broken input accepted: ${what}"
        sed 's/^/    /' "${WORK}/negative.log" >&2
    elif ! grep -qF -- "${pattern}" "${WORK}/negative.log"; then
        fail "broken input rejected, but not for '${pattern}': ${what}"
        sed 's/^/    /' "${WORK}/negative.log" >&2
    else
        printf 'ok   rejected: %s (%s)\n' "${what}" "${pattern}"
    fi
}
cat >"${WORK}/bad-type.yaml" <<'YAML'
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: broken
spec:
  replicas: three
  serviceName: eventstore-peers
  selector:
    matchLabels: {app: broken}
  template:
    metadata:
      labels: {app: broken}
    spec:
      containers:
        - name: broken
          image: eventstore:local
YAML
cat >"${WORK}/bad-field.yaml" <<'YAML'
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: broken
spec:
  serviceName: eventstore-peers
  selector:
    matchLabels: {app: broken}
  template:
    metadata:
      labels: {app: broken}
    spec:
      containers:
        - name: broken
          image: eventstore:local
          livenessProbe:
            grpcc: {port: 8080}
YAML
cat >"${WORK}/bad-kind.yaml" <<'YAML'
apiVersion: apps/v1
kind: StatefullSet
metadata:
  name: broken
YAML
expect_reject "StatefulSet with replicas: three" "'three' is not of type 'integer'" "${VPY}" "${CHECK}" schema "${schema_args[@]}" "${WORK}/bad-type.yaml"
expect_reject "StatefulSet with an unknown field" "'grpcc' was unexpected" "${VPY}" "${CHECK}" schema "${schema_args[@]}" "${WORK}/bad-field.yaml"
expect_reject "unknown kind" "no schema for apiVersion 'apps/v1' kind 'StatefullSet'" "${VPY}" "${CHECK}" schema "${schema_args[@]}" "${WORK}/bad-kind.yaml"
sed 's/eventstore-2\.eventstore-peers:9090/eventstore-2.eventstore:9090/' "${RENDERED}" >"${WORK}/bad-peers.yaml"
expect_reject "EVENTSTORE_PEERS not via the headless Service" "FAIL EVENTSTORE_PEERS lists every ordinal" \
    "${VPY}" "${CHECK}" consistency "${WORK}/bad-peers.yaml" "${COMPOSE_FILE}" "${KDIR}"
sed 's/publishNotReadyAddresses: true/publishNotReadyAddresses: false/' "${RENDERED}" >"${WORK}/bad-headless.yaml"
expect_reject "headless Service hiding not-ready pods" "FAIL peer Service publishes not-ready addresses" \
    "${VPY}" "${CHECK}" consistency "${WORK}/bad-headless.yaml" "${COMPOSE_FILE}" "${KDIR}"
sed 's/RUST_LOG: info/RUST_LOG: debug/' "${COMPOSE_FILE}" >"${WORK}/bad-compose.yml"
expect_reject "compose environment differing from the StatefulSet" "FAIL compose eventstore-0: same environment" \
    "${VPY}" "${CHECK}" consistency "${RENDERED}" "${WORK}/bad-compose.yml" "${KDIR}"

mkdir -p -- "${WORK}/bad-tls/examples"
cp -- "${CDIR}/kustomization.yaml" "${CDIR}/statefulset-tls.yaml" "${WORK}/bad-tls/"
sed '/- client auth/d' "${CDIR}/examples/cert-manager.yaml" >"${WORK}/bad-tls/examples/cert-manager.yaml"
expect_reject "peer Certificate without client auth" "FAIL the peer Certificate allows server auth and client auth" \
    "${VPY}" "${CHECK}" tls "${TLS_RENDERED}" "${WORK}/bad-tls"
sed 's/readOnly: true/readOnly: false/' "${TLS_RENDERED}" >"${WORK}/bad-tls-mount.yaml"
expect_reject "TLS Secret mounted writable" "FAIL EVENTSTORE_PEER_TLS_KEY=/etc/eventstore/tls/peer/tls.key is tls.crt" \
    "${VPY}" "${CHECK}" tls "${WORK}/bad-tls-mount.yaml" "${CDIR}"
sed 's/\*\.eventstore-peers"/*.eventstore-peer"/' "${CDIR}/examples/cert-manager.yaml" >"${WORK}/bad-tls/examples/cert-manager.yaml"
expect_reject "peer Certificate without the pods' names" "FAIL the peer Certificate names every host" \
    "${VPY}" "${CHECK}" tls "${TLS_RENDERED}" "${WORK}/bad-tls"

# --- 6. compose file ---------------------------------------------------------
step "compose file"
compose_cmd=()
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose_cmd=(docker-compose)
fi
if [[ ${#compose_cmd[@]} -gt 0 ]]; then
    if "${compose_cmd[@]}" --project-name eventstore-validate --file "${COMPOSE_FILE}" config --quiet; then
        echo "ok   ${compose_cmd[*]} config"
    else
        fail "${compose_cmd[*]} config"
    fi
else
    echo "skipped: no compose tool installed"
fi

echo
if [[ ${failures} -gt 0 ]]; then
    printf '%d problem(s) found\n' "${failures}" >&2
    printf 'manifests: %d passed, %d failed\n' "$((steps - failed_steps))" "${failed_steps}"
    exit 1
fi
printf 'manifests: %d passed, 0 failed\n' "${steps}"
