#!/usr/bin/env bash
# Build envoyproxy/ratelimit for `make bench-ratelimit` from the Go module proxy. The
# project tags no Go module version: this is its main branch of 2026-01-22 (the
# pseudo-version below), cached as $ENVOY_RATELIMIT_DIR/service_cmd (default
# /var/cache/synod-toolchain/envoy-ratelimit-VERSION). Idempotent: does nothing when the
# binary is there. Needs Go (1.25 or later, or a Go that fetches its toolchain) and the
# Go module proxy; Redis comes from install-redis.sh.
set -euo pipefail

VERSION=v1.4.1-0.20260122083618-3fb702589d36
DIR=${ENVOY_RATELIMIT_DIR:-/var/cache/synod-toolchain/envoy-ratelimit-$VERSION}
if [ -x "$DIR/service_cmd" ]; then
    echo "install-envoy-ratelimit: envoyproxy/ratelimit $VERSION already built ($DIR/service_cmd)"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "install-envoy-ratelimit: no go on PATH; install Go to build envoyproxy/ratelimit" >&2
    exit 1
fi
mkdir -p "$DIR"
echo "install-envoy-ratelimit: building envoyproxy/ratelimit $VERSION into $DIR (minutes)"
GOBIN="$DIR" GOFLAGS=-mod=mod go install \
    "github.com/envoyproxy/ratelimit/src/service_cmd@$VERSION"
test -x "$DIR/service_cmd"
echo "install-envoy-ratelimit: envoyproxy/ratelimit $VERSION built ($DIR/service_cmd)"
