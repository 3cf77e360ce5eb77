#!/usr/bin/env bash
# Install what `make bench` compares Synod against and drives it with: Debian's
# etcd-server (etcd and etcdctl) and wrk. Idempotent: does nothing when both are
# already on PATH. Needs root (or sudo) and a reachable Debian mirror.
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-peers: etcd and wrk already present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-peers: need root or sudo to apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: no apt-get; install ${missing[*]} by hand (etcd >= 3.4 and wrk 4.x)" >&2
    exit 1
fi

echo "install-peers: installing ${missing[*]}"
# The packaged etcd-server would otherwise start a system etcd on 2379/2380; the
# benchmark starts its own members, so keep the service from starting.
policy_added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
fi
cleanup() { if [ "$policy_added" -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
# Even with policy-rc.d a system etcd may run (systemd hosts): stop it so its
# default ports never collide with anything.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    $SUDO systemctl stop etcd || true
    $SUDO systemctl disable etcd || true
fi
command -v etcd >/dev/null && command -v wrk >/dev/null
echo "install-peers: etcd $(etcd --version | head -1 | awk '{print $3}'), $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}')"
