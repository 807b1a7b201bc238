#!/usr/bin/env bash
# Builds the eventstore container image on a machine that cannot pull any base
# image: the locally built binary plus exactly the shared libraries it links
# (as reported by ldd, dynamic loader included) go into a FROM-scratch image.
#
# Usage: cluster/build-image.sh
# Environment:
#   EVENTSTORE_BIN    binary to package (default: <repo>/target/release/eventstore)
#   EVENTSTORE_IMAGE  image tag to produce (default: eventstore:local)
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

BIN="${EVENTSTORE_BIN:-${ES_REPO_ROOT}/target/release/eventstore}"
APP_UID=10001
APP_GID=10001

[[ -f "${BIN}" ]] || die "binary not found: ${BIN}
  build it first:  (cd '${ES_REPO_ROOT}' && cargo build --release)
  or point EVENTSTORE_BIN at an existing build."
[[ -x "${BIN}" ]] || die "binary is not executable: ${BIN}"
command -v ldd >/dev/null 2>&1 || die "ldd is required (Debian package libc-bin)"
require_docker

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/eventstore-image.XXXXXX")"
trap 'rm -rf -- "${STAGE}"' EXIT
ROOTFS="${STAGE}/rootfs"
mkdir -p "${ROOTFS}/usr/local/bin" "${ROOTFS}/etc" "${STAGE}/data" "${ROOTFS}/tmp"
chmod 1777 "${ROOTFS}/tmp"

install -m 0755 "${BIN}" "${ROOTFS}/usr/local/bin/eventstore"

# Collect the shared objects: "name => /path (addr)" and "/path (addr)" lines.
# Lines without a path (linux-vdso) are skipped; a missing library is fatal.
ldd_out="$(ldd "${BIN}" 2>&1)" || die "ldd failed on ${BIN}:
${ldd_out}"
if grep -q 'not found' <<<"${ldd_out}"; then
    die "unresolved shared libraries:
${ldd_out}"
fi
mapfile -t libs < <(awk '
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }
' <<<"${ldd_out}")
if [[ ${#libs[@]} -eq 0 ]]; then
    log "ldd reports no shared libraries (static binary)"
fi
for lib in "${libs[@]}"; do
    # Keep the path the loader was told about; copy the file behind any symlink.
    mkdir -p "${ROOTFS}$(dirname -- "${lib}")"
    cp -L -- "${lib}" "${ROOTFS}${lib}"
    log "library: ${lib}"
done

cat >"${ROOTFS}/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
eventstore:x:${APP_UID}:${APP_GID}:eventstore:/var/lib/eventstore:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
PASSWD
cat >"${ROOTFS}/etc/group" <<GROUP
root:x:0:
eventstore:x:${APP_GID}:
nogroup:x:65534:
GROUP
# Name resolution goes through glibc (files + dns are built into libc >= 2.34).
cat >"${ROOTFS}/etc/nsswitch.conf" <<'NSS'
hosts: files dns
NSS

version="$(awk -F'"' '/^version *=/ { print $2; exit }' "${ES_REPO_ROOT}/Cargo.toml" 2>/dev/null || true)"

cat >"${STAGE}/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY --chown=${APP_UID}:${APP_GID} data/ /var/lib/eventstore/
LABEL org.opencontainers.image.title="eventstore" \\
      org.opencontainers.image.description="Replicated key/value store for short-lived event-pipeline state" \\
      org.opencontainers.image.version="${version:-unknown}" \\
      org.opencontainers.image.licenses="Apache-2.0"
ENV RUST_LOG=info,openraft=warn \\
    EVENTSTORE_LISTEN=0.0.0.0:8080 \\
    EVENTSTORE_PEER_LISTEN=0.0.0.0:9090 \\
    EVENTSTORE_DATA_DIR=/var/lib/eventstore
USER ${APP_UID}:${APP_GID}
WORKDIR /var/lib/eventstore
EXPOSE 8080 9090 9100
VOLUME ["/var/lib/eventstore"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \\
    CMD ["/usr/local/bin/eventstore", "health", "--server", "127.0.0.1:8080"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/eventstore"]
CMD ["serve"]
DOCKERFILE

old_id="$(docker image inspect --format '{{.Id}}' "${ES_IMAGE}" 2>/dev/null || true)"

log "building ${ES_IMAGE} from ${BIN}"
docker build --quiet --tag "${ES_IMAGE}" "${STAGE}" >/dev/null

new_id="$(docker image inspect --format '{{.Id}}' "${ES_IMAGE}")"
# Re-running replaces the tag; drop the now-untagged previous image if nothing uses it.
if [[ -n "${old_id}" && "${old_id}" != "${new_id}" ]]; then
    if [[ "$(docker image inspect --format '{{len .RepoTags}}' "${old_id}" 2>/dev/null || echo 1)" == 0 ]]; then
        docker image rm "${old_id}" >/dev/null 2>&1 || true
    fi
fi

size="$(docker image inspect --format '{{.Size}}' "${ES_IMAGE}")"
printf '%s %s size: %s bytes (%s MiB)\n' "${ES_IMAGE}" "${new_id:7:12}" "${size}" \
    "$(awk -v s="${size}" 'BEGIN { printf "%.1f", s / 1048576 }')"
