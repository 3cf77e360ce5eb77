#!/usr/bin/env bash
# Build the Synod images (node, operator, chaos-tools) and load them into the
# kind cluster.
#
# Offline (default): BASE_IMAGE is a Debian+Python base built here
# (build-images.sh python), the chaos-tools base is the Debian+iptables rootfs,
# and the wheels (the project's and its dependencies') are built on the host,
# since build containers cannot reach the package index here.
# SYNOD_KIND_PUBLIC=1: python:3.12-slim and debian:bookworm-slim from the
# public registry; wheels are still built on the host, for the base image's
# Python version.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
REPO=$(cd "$HERE/../.." && pwd)
PUBLIC=${SYNOD_KIND_PUBLIC:-0}
PY=${PY:-$REPO/.venv/bin/python}
TAG=${SYNOD_IMAGE_TAG:-dev}
NODE_IMG=synod/node:$TAG
OPERATOR_IMG=synod/operator:$TAG
CHAOS_IMG=synod/chaos-tools:$TAG
start=$(date +%s)

bash "$HERE/docker-up.sh"
if [ "$PUBLIC" = 1 ]; then
  py_base=python:3.12-slim; chaos_base=debian:bookworm-slim
else
  bash "$HERE/build-images.sh" python slim
  py_base=$PYTHON_BASE_IMAGE; chaos_base=synod.local/local-path-helper:$DEBIAN_SUITE
fi
# The legacy builder handles these Dockerfiles; use BuildKit only where the
# client has it (a newer client without the buildx plugin refuses BuildKit).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0

ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/wheels"
pyver=$(docker run --rm --entrypoint python "$py_base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
log "wheels for Python $pyver (base $py_base), built on the host"
SOURCE_DATE_EPOCH=315532800 "$PY" -m pip wheel --quiet --no-deps -w "$ctx/wheels" "$REPO"
wheel=$(ls "$ctx"/wheels/synod-*.whl)
"$PY" -m pip download --quiet --only-binary=:all: --python-version "$pyver" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform linux_x86_64 --platform any -d "$ctx/wheels" "$wheel"
ls "$ctx/wheels" | sed 's/^/  /' >&2

for pair in "node-image/Dockerfile:$NODE_IMG" "operator/Dockerfile:$OPERATOR_IMG"; do
  df=${pair%%:*}; img=${pair#*:}
  log "docker build $img ($df, BASE_IMAGE=$py_base)"
  docker build -q -f "$REPO/$df" --build-arg BASE_IMAGE="$py_base" -t "$img" "$ctx" >/dev/null
done
log "docker build $CHAOS_IMG (BASE_IMAGE=$chaos_base)"
docker build --quiet -f "$REPO/e2e/chaos-tools/Dockerfile" --build-arg BASE_IMAGE="$chaos_base" -t "$CHAOS_IMG" "$REPO/e2e/chaos-tools" >/dev/null
docker run --rm --entrypoint python "$NODE_IMG" -c "import synod" >/dev/null
for img in "$NODE_IMG" "$OPERATOR_IMG" "$CHAOS_IMG"; do
  log "  $img $(docker image inspect -f '{{.Size}}' "$img" | numfmt --to=iec)"
done

if command -v kind >/dev/null && kind get clusters 2>/dev/null | grep -qx "$SYNOD_CLUSTER_NAME"; then
  log "kind load docker-image into cluster $SYNOD_CLUSTER_NAME"
  kind load docker-image --name "$SYNOD_CLUSTER_NAME" "$NODE_IMG" "$OPERATOR_IMG" "$CHAOS_IMG"
else
  log "no kind cluster $SYNOD_CLUSTER_NAME: images built but not loaded (run make kind-up)"
fi
log "images done in $(( $(date +%s) - start ))s"
