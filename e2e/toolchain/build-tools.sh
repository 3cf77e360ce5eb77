#!/usr/bin/env bash
# Build, from the Go module proxy (and gcc for pause), every binary the
# offline cluster needs besides the Kubernetes server binaries:
#   kind, helm            -> $TOOLCHAIN_BIN (CLIs)
#   etcd, etcdctl         -> $ETCD_OUT      (wrapper module over go.etcd.io/etcd/server/v3)
#   coredns               -> $COREDNS_OUT   (go install)
#   local-path-provisioner-> $LOCAL_PATH_OUT (go install)
#   pause                 -> $PAUSE_OUT     (static gcc build of build/pause/linux/pause.c)
# Each artifact lives in a directory keyed by its pinned version; an existing
# one is reused. Usage: build-tools.sh [kind|helm|etcd|coredns|local-path|pause|kubectl]...
set -euo pipefail
. "$(dirname "$0")/versions.sh"
mkdir -p "$TOOLCHAIN_BIN"
exec 9>"$SYNOD_TOOLCHAIN_CACHE/.build-tools.lock"
flock -w 3600 9 || die "another build-tools.sh holds the lock for an hour"

# go_install <out-dir> <binary-name> <module@version> [extra go flags...]
go_install() {
  local out=$1 name=$2 modver=$3; shift 3
  if [ -x "$out/$name" ]; then log "$name: cached ($out)"; return 0; fi
  log "$name: go install $modver"
  local start; start=$(date +%s)
  mkdir -p "$out.tmp"
  CGO_ENABLED=0 GOBIN="$out.tmp" $NICE go install -trimpath -ldflags "-s -w" "$@" "$modver"
  mkdir -p "$out"; mv "$out.tmp/$name" "$out/$name"; rm -rf "$out.tmp"
  log "$name: built in $(( $(date +%s) - start ))s"
}

build_kind() {
  go_install "$SYNOD_TOOLCHAIN_CACHE/kind-$KIND_VERSION" kind "sigs.k8s.io/kind@$KIND_VERSION"
  ln -sf "$SYNOD_TOOLCHAIN_CACHE/kind-$KIND_VERSION/kind" "$TOOLCHAIN_BIN/kind"
}

build_helm() {
  local out=$SYNOD_TOOLCHAIN_CACHE/helm-$HELM_VERSION
  if [ ! -x "$out/helm" ]; then
    log "helm: go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    local start; start=$(date +%s)
    mkdir -p "$out.tmp"
    CGO_ENABLED=0 GOBIN="$out.tmp" $NICE go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    mkdir -p "$out"; mv "$out.tmp/helm" "$out/helm"; rm -rf "$out.tmp"
    log "helm: built in $(( $(date +%s) - start ))s"
  else
    log "helm: cached ($out)"
  fi
  ln -sf "$out/helm" "$TOOLCHAIN_BIN/helm"
}

build_kubectl() {
  # The client is the kubectl built with the server binaries (same version).
  [ -x "$K8S_OUT/kubectl" ] || bash "$(dirname "$0")/build-k8s.sh"
  ln -sf "$K8S_OUT/kubectl" "$TOOLCHAIN_BIN/kubectl"
}

build_etcd() {
  local out=$ETCD_OUT
  if [ -x "$out/etcd" ] && [ -x "$out/etcdctl" ]; then log "etcd: cached ($out)"; return 0; fi
  local work=$SYNOD_TOOLCHAIN_CACHE/src/etcd-wrapper-$ETCD_VERSION
  mkdir -p "$work/etcd" "$out.tmp"
  cat > "$work/go.mod" <<EOM
module synod.local/etcd-wrapper

go 1.24

require (
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
	go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION
)
EOM
  # etcd's own main (go.etcd.io/etcd/v3) is just etcdmain.Main(os.Args).
  cat > "$work/etcd/main.go" <<'EOM'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOM
  cat > "$work/tools.go" <<'EOM'
//go:build tools

package tools

import _ "go.etcd.io/etcd/etcdctl/v3"
EOM
  log "etcd: building $ETCD_VERSION from a wrapper module"
  local start; start=$(date +%s)
  ( cd "$work" && GOFLAGS=-mod=mod $NICE go mod tidy -e >/dev/null 2>&1 || true
    CGO_ENABLED=0 GOFLAGS=-mod=mod $NICE go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" ./etcd
    CGO_ENABLED=0 GOFLAGS=-mod=mod $NICE go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3 )
  "$out.tmp/etcd" --version | grep -q "${ETCD_VERSION#v}" || die "etcd does not report $ETCD_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "etcd: built in $(( $(date +%s) - start ))s"
}

build_coredns() { go_install "$COREDNS_OUT" coredns "github.com/coredns/coredns@$COREDNS_VERSION"; }

build_local_path() {
  go_install "$LOCAL_PATH_OUT" local-path-provisioner "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
}

build_pause() {
  local out=$PAUSE_OUT
  if [ -x "$out/pause" ]; then log "pause: cached ($out)"; return 0; fi
  local kdir
  kdir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  mkdir -p "$out.tmp"
  log "pause: gcc -static $kdir/build/pause/linux/pause.c"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_IMAGE_TAG-synod" -o "$out.tmp/pause" "$kdir/build/pause/linux/pause.c"
  strip "$out.tmp/pause"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(kind helm kubectl etcd coredns local-path pause)
for t in "${targets[@]}"; do
  case $t in
    kind) build_kind ;; helm) build_helm ;; kubectl) build_kubectl ;; etcd) build_etcd ;;
    coredns) build_coredns ;; local-path) build_local_path ;; pause) build_pause ;;
    *) die "unknown artifact $t" ;;
  esac
done
