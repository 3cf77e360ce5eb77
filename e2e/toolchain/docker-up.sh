#!/usr/bin/env bash
# Make a Docker engine available: install Debian's docker.io if missing,
# register the capability-dropping runc wrapper as the default runtime (see
# runc-capwrap/main.go: this machine's bounding set lacks CAP_SYS_RESOURCE, so
# plain runc cannot start --privileged containers), and start dockerd if it is
# not running. Idempotent.
set -euo pipefail
. "$(dirname "$0")/versions.sh"
HERE=$(cd "$(dirname "$0")" && pwd)

apt_updated=$SYNOD_TOOLCHAIN_CACHE/.apt-updated
need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v mmdebstrap >/dev/null || need_pkgs+=(mmdebstrap)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v jq >/dev/null || need_pkgs+=(jq)
command -v gcc >/dev/null || need_pkgs+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_pkgs+=(libc6-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  mkdir -p "$SYNOD_TOOLCHAIN_CACHE"
  if [ ! -e "$apt_updated" ] || [ -n "$(find "$apt_updated" -mmin +720)" ]; then
    log "apt-get update"; apt-get update -qq && touch "$apt_updated"
  fi
  log "apt-get install ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# Does this machine's capability bounding set lack anything runc would grant
# a privileged container? (Known capabilities: bits 0..40.)
bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
need_wrapper=0
[ $(( 0x$bnd & 0x1ffffffffff )) -eq $(( 0x1ffffffffff )) ] || need_wrapper=1

# The runc wrapper, built from source in this directory (tiny, no deps). It is
# always built (the kind base image carries it for containerd), but only made
# Docker's default runtime where the bounding set is short.
WRAP=/usr/local/sbin/runc-capwrap
src_sum=$(cat "$HERE/runc-capwrap/main.go" "$HERE/runc-capwrap/go.mod" | sha1sum | cut -c1-12)
WRAP_CACHE=$SYNOD_TOOLCHAIN_CACHE/runc-capwrap-$src_sum
if [ ! -x "$WRAP_CACHE/runc-capwrap" ]; then
  log "building runc-capwrap"
  mkdir -p "$WRAP_CACHE"
  (cd "$HERE/runc-capwrap" && CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags "-s -w" -o "$WRAP_CACHE/runc-capwrap" .)
fi
if ! cmp -s "$WRAP_CACHE/runc-capwrap" "$WRAP" 2>/dev/null; then
  install -m 0755 "$WRAP_CACHE/runc-capwrap" "$WRAP.new" && mv -f "$WRAP.new" "$WRAP"
fi

# Docker's daemon.json: default runtime = the wrapper.
mkdir -p /etc/docker
want='{"runtimes":{"runc-capwrap":{"path":"'$WRAP'"}},"default-runtime":"runc-capwrap","storage-driver":"overlay2"}'
restart=0
if [ $need_wrapper = 1 ] && [ "$(cat /etc/docker/daemon.json 2>/dev/null)" != "$want" ]; then
  printf '%s\n' "$want" > /etc/docker/daemon.json; restart=1
fi

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }
if docker_ok && [ $restart = 1 ]; then
  log "dockerd runs with an old daemon.json: restarting it"
  if command -v systemctl >/dev/null && systemctl is-active -q docker 2>/dev/null; then
    systemctl restart docker
  else
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" || true
    for _ in $(seq 60); do [ -e /var/run/docker.pid ] || break; sleep 1; done
  fi
fi
if ! docker_ok; then
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl start docker || true
  fi
fi
if ! docker_ok; then
  log "starting dockerd (log: /var/log/synod-dockerd.log)"
  rm -f /var/run/docker.pid
  setsid nohup dockerd >>/var/log/synod-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do docker_ok && break; sleep 1; done
fi
docker_ok || die "dockerd did not come up in 60s; see /var/log/synod-dockerd.log"
runtime=$(docker info --format '{{.DefaultRuntime}}')
[ $need_wrapper = 0 ] || [ "$runtime" = runc-capwrap ] || die "docker default runtime is $runtime, not runc-capwrap (CapBnd $bnd)"
log "docker engine ready ($(docker version --format '{{.Server.Version}}'), runtime $runtime)"
