#!/usr/bin/env bash
# Delete the kind cluster (the image and binary caches stay).
set -euo pipefail
. "$(dirname "$0")/versions.sh"
command -v kind >/dev/null || { log "kind not installed: nothing to delete"; exit 0; }
docker info >/dev/null 2>&1 || { log "docker not running: nothing to delete"; exit 0; }
kind delete cluster --name "$SYNOD_CLUSTER_NAME"
rm -f "$SYNOD_TOOLCHAIN_CACHE/kubeconfig-$SYNOD_CLUSTER_NAME"
