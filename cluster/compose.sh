#!/usr/bin/env bash
# Runs the detected compose tool against the local cluster (right file and
# project name), from any directory. Examples:
#   cluster/compose.sh ps
#   cluster/compose.sh logs -f eventstore-1
#   cluster/compose.sh stop eventstore-0        # take a node down
#   cluster/compose.sh start eventstore-0
#   cluster/compose.sh exec -T eventstore-0 /usr/local/bin/eventstore cluster status --server 127.0.0.1:9090
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_docker
compose "$@"
