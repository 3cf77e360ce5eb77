#!/usr/bin/env bash
# Install what `make bench-ids` compares Synod's ID generators against: Debian's
# redis-server. Idempotent: does nothing when it is already on PATH. The packaged
# service is kept from starting: the benchmark starts its own server on a free port.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "install-redis: redis-server already present"
    exit 0
fi
"$(dirname "$0")/apt-install.sh" install-redis "redis-server" "redis-server"
echo "install-redis: $(redis-server --version | head -1)"
