#!/usr/bin/env bash
# Install what `make bench-locks` compares Synod's locks against: Debian's redis-server
# (Redis 7), zookeeperd (ZooKeeper 3.8, Java) and etcd-server (etcd 3.4). Idempotent: does
# nothing when all are already installed. The packaged services are kept from starting
# (and stopped if a systemd host started them anyway): the benchmark starts its own
# processes on loopback ports. Python clients come from pyproject's `bench` extra, never
# from here. Needs root (or sudo) and a reachable Debian mirror.
set -euo pipefail

ZK_JAR=/usr/share/java/zookeeper.jar
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if ! [ -e "$ZK_JAR" ] || ! command -v java >/dev/null 2>&1; then
    missing+=(zookeeperd)
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-lock-peers: redis-server, etcd and zookeeper already present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-lock-peers: need root or sudo to apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-lock-peers: no apt-get; install ${missing[*]} by hand" \
         "(redis >= 7, zookeeper 3.8 with a JRE, etcd 3.4)" >&2
    exit 1
fi

echo "install-lock-peers: installing ${missing[*]}"
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
if command -v systemctl >/dev/null 2>&1; then
    for unit in redis-server zookeeper etcd; do
        if systemctl is-active --quiet "$unit" 2>/dev/null; then
            $SUDO systemctl stop "$unit" || true
            $SUDO systemctl disable "$unit" || true
        fi
    done
fi
command -v redis-server >/dev/null && command -v etcd >/dev/null
test -e "$ZK_JAR"
echo "install-lock-peers: $(redis-server --version | awk '{print $1, $2, $3}')," \
     "etcd $(etcd --version | head -1 | awk '{print $3}'), zookeeper $ZK_JAR"
