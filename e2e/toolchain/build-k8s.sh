#!/usr/bin/env bash
# Build Kubernetes server binaries for $K8S_VERSION from the Go module proxy.
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging
# modules with ./staging/...), so a tiny wrapper module requires it and
# replaces every staging module with its published $K8S_STAGING_VERSION.
set -euo pipefail
. "$(dirname "$0")/versions.sh"
OUT=$K8S_OUT
mkdir -p "$SYNOD_TOOLCHAIN_CACHE"
exec 9>"$SYNOD_TOOLCHAIN_CACHE/.build-k8s.lock"
flock -w 3600 9 || die "another build of kubernetes holds the lock for an hour"
CMDS=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
done_all=1
for c in "${CMDS[@]}"; do [ -x "$OUT/$c" ] || done_all=0; done
if [ $done_all = 1 ]; then log "kubernetes $K8S_VERSION: cached in $OUT"; exit 0; fi

WORK=$SYNOD_TOOLCHAIN_CACHE/src/k8s-wrapper-$K8S_VERSION
mkdir -p "$WORK" "$OUT.tmp"
cd "$WORK"
log "kubernetes $K8S_VERSION: preparing wrapper module in $WORK"
gomod_json=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
kdir=$(printf '%s' "$gomod_json" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -d "$kdir" ] || die "k8s.io/kubernetes@$K8S_VERSION not in module cache"
goline=$(grep -m1 '^go ' "$kdir/go.mod")
{
  echo "module synod.local/k8s-wrapper"
  echo
  echo "$goline"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  grep -E '^\s*k8s.io/[^ ]+ => \./staging/' "$kdir/go.mod" | awk -v v="$K8S_STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
} > go.mod
# A file that imports the commands keeps `go mod tidy` from dropping them.
{
  echo "//go:build tools"
  echo "package tools"
  echo "import ("
  for c in "${CMDS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
  echo ")"
} > tools.go
GOFLAGS=-mod=mod $NICE go mod tidy -e >/dev/null 2>tidy.log || { cat tidy.log; die "go mod tidy failed"; }

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean"
  ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
pkgs=(); for c in "${CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
log "kubernetes $K8S_VERSION: go build ${CMDS[*]} (CGO_ENABLED=0, niced; cold build takes a while)"
start=$(date +%s)
CGO_ENABLED=0 GOFLAGS=-mod=mod $NICE go build -trimpath -tags "providerless,dockerless" -ldflags "$ldflags" -o "$OUT.tmp/" "${pkgs[@]}"
"$OUT.tmp/kubeadm" version -o short | grep -qx "$K8S_VERSION" || die "kubeadm does not report $K8S_VERSION"
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
log "kubernetes $K8S_VERSION: built in $(( $(date +%s) - start ))s into $OUT"
