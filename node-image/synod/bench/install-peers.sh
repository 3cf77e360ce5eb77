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

# The packaged etcd-server would otherwise start a system etcd on 2379/2380.
"$(dirname "$0")/apt-install.sh" install-peers "${missing[*]}" "etcd"
command -v etcd >/dev/null && command -v wrk >/dev/null
echo "install-peers: etcd $(etcd --version | head -1 | awk '{print $3}'), $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}')"
