#!/usr/bin/env bash
# Install what `make bench-ids` compares Synod's ID generators against: Debian's
# redis-server. Idempotent: does nothing when it is already on PATH. Needs root (or
# sudo) and a reachable Debian mirror. The packaged service is kept from starting:
# the benchmark starts its own server on a free port.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "install-redis: redis-server already present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-redis: need root or sudo to apt-get install redis-server" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-redis: no apt-get; install redis-server by hand" >&2
    exit 1
fi
policy_added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
fi
cleanup() { if [ "$policy_added" -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends redis-server; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y --no-install-recommends redis-server
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    $SUDO systemctl stop redis-server || true
    $SUDO systemctl disable redis-server || true
fi
echo "install-redis: $(redis-server --version | head -1)"
