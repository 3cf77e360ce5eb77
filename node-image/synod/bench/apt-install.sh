#!/usr/bin/env bash
# Shared by the bench install scripts: apt-get install PACKAGES with their services kept
# from starting (policy-rc.d while installing), then stop and disable the UNITS a systemd
# host started anyway: the benchmarks start their own servers on loopback ports.
# Usage: apt-install.sh WHO "PACKAGE ..." "UNIT ..."   (WHO names the caller in messages)
# Needs root (or sudo) and a reachable Debian mirror.
set -euo pipefail

who=$1
read -r -a packages <<<"$2"
read -r -a units <<<"${3:-}"
[ ${#packages[@]} -gt 0 ] || { echo "$who: nothing to install" >&2; exit 2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "$who: need root or sudo to apt-get install ${packages[*]}" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: no apt-get; install ${packages[*]} by hand" >&2
    exit 1
fi

echo "$who: installing ${packages[*]}"
policy_added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_added=1
fi
cleanup() { if [ "$policy_added" -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends "${packages[@]}"; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y --no-install-recommends "${packages[@]}"
fi
if command -v systemctl >/dev/null 2>&1; then
    for unit in "${units[@]}"; do
        if systemctl is-active --quiet "$unit" 2>/dev/null; then
            $SUDO systemctl stop "$unit" || true
            $SUDO systemctl disable "$unit" || true
        fi
    done
fi
