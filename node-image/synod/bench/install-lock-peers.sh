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

"$(dirname "$0")/apt-install.sh" install-lock-peers "${missing[*]}" "redis-server zookeeper etcd"
command -v redis-server >/dev/null && command -v etcd >/dev/null
test -e "$ZK_JAR"
echo "install-lock-peers: $(redis-server --version | awk '{print $1, $2, $3}')," \
     "etcd $(etcd --version | head -1 | awk '{print $3}'), zookeeper $ZK_JAR"
