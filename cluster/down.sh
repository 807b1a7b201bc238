#!/usr/bin/env bash
# Stops the local cluster and deletes its containers, network and data volumes.
#
# Usage: cluster/down.sh
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_docker
log "stopping project ${ES_PROJECT} and removing its volumes"
compose down --volumes --remove-orphans --timeout 30
