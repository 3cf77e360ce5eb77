#!/usr/bin/env bash
# Build what `make bench-ratelimit` compares Synod's rate limits against: gubernator
# v2.13.0 from the Go module proxy (module github.com/gubernator-io/gubernator/v2; the
# older github.com/mailgun/gubernator/v2 path has no v2.13.0), cached as
# $GUBERNATOR_DIR/gubernator (default /var/cache/synod-toolchain/gubernator-v2.13.0).
# Idempotent: does nothing when the binary is there. Needs Go (1.21 or later) and the
# Go module proxy; the benchmark starts its own members on loopback ports.
set -euo pipefail

VERSION=v2.13.0
DIR=${GUBERNATOR_DIR:-/var/cache/synod-toolchain/gubernator-$VERSION}
if [ -x "$DIR/gubernator" ]; then
    echo "install-gubernator: gubernator $VERSION already built ($DIR/gubernator)"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "install-gubernator: no go on PATH; install Go (golang-go) to build gubernator" >&2
    exit 1
fi
mkdir -p "$DIR"
echo "install-gubernator: building gubernator $VERSION into $DIR (a few minutes)"
GOBIN="$DIR" GOFLAGS=-mod=mod go install \
    "github.com/gubernator-io/gubernator/v2/cmd/gubernator@$VERSION"
test -x "$DIR/gubernator"
echo "install-gubernator: gubernator $VERSION built ($DIR/gubernator)"
