#!/usr/bin/env bash
# Expose kube-apiserver, etcd and kubectl (built by build-k8s.sh and
# build-tools.sh) the way controller-runtime's envtest expects them: one
# directory, named by the KUBEBUILDER_ASSETS environment variable.
# Prints the `export` line to stdout; progress goes to stderr.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
ASSETS=$SYNOD_TOOLCHAIN_CACHE/envtest-$K8S_VERSION-etcd$ETCD_VERSION
if [ ! -x "$ASSETS/kube-apiserver" ] || [ ! -x "$ASSETS/etcd" ] || [ ! -x "$ASSETS/kubectl" ]; then
  bash "$HERE/build-k8s.sh" >&2
  bash "$HERE/build-tools.sh" etcd >&2
  mkdir -p "$ASSETS.tmp"
  cp "$K8S_OUT/kube-apiserver" "$K8S_OUT/kubectl" "$ETCD_OUT/etcd" "$ASSETS.tmp/"
  rm -rf "$ASSETS"; mv "$ASSETS.tmp" "$ASSETS"
fi
"$ASSETS/kube-apiserver" --version >&2
"$ASSETS/etcd" --version | sed -n 1p >&2
# A stable name for tests that run without the variable set.
ln -sfn "$ASSETS" "$SYNOD_TOOLCHAIN_CACHE/envtest"
echo "export KUBEBUILDER_ASSETS=$ASSETS"
