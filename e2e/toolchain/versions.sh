# Pinned versions of everything the offline Kubernetes toolchain builds.
# Sourced by every script in this directory. Change a pin here and the
# cache key (directory name under $SYNOD_TOOLCHAIN_CACHE) changes with it.
KIND_VERSION=v0.30.0            # sigs.k8s.io/kind (node image API matches k8s 1.34)
K8S_VERSION=v1.34.4             # k8s.io/kubernetes; staging modules at v0.34.4
K8S_STAGING_VERSION=v0.34.4
HELM_VERSION=v3.19.0            # helm.sh/helm/v3
ETCD_VERSION=v3.6.5             # go.etcd.io/etcd/server/v3 (kubeadm 1.34 default: 3.6.5-0)
ETCD_IMAGE_TAG=3.6.5-0
COREDNS_VERSION=v1.12.1         # github.com/coredns/coredns (kubeadm 1.34 default)
PAUSE_IMAGE_TAG=3.10.1          # built from build/pause/linux/pause.c of k8s.io/kubernetes
LOCAL_PATH_VERSION=v0.0.30      # github.com/rancher/local-path-provisioner
DEBIAN_SUITE=bookworm
TOOLCHAIN_REV=2                 # bump when the image recipes change (part of image cache keys)
PYTHON_BASE_TAG=3.11-slim-bookworm  # local stand-in for python:3.12-slim (Debian bookworm ships Python 3.11)

SYNOD_TOOLCHAIN_CACHE=${SYNOD_TOOLCHAIN_CACHE:-/var/cache/synod-toolchain}
SYNOD_CLUSTER_NAME=${SYNOD_CLUSTER_NAME:-synod}
TOOLCHAIN_BIN=$SYNOD_TOOLCHAIN_CACHE/bin              # kind, helm, kubectl (client)
K8S_OUT=$SYNOD_TOOLCHAIN_CACHE/kubernetes-$K8S_VERSION # server binaries
ETCD_OUT=$SYNOD_TOOLCHAIN_CACHE/etcd-$ETCD_VERSION
COREDNS_OUT=$SYNOD_TOOLCHAIN_CACHE/coredns-$COREDNS_VERSION
PAUSE_OUT=$SYNOD_TOOLCHAIN_CACHE/pause-$PAUSE_IMAGE_TAG-$K8S_VERSION
LOCAL_PATH_OUT=$SYNOD_TOOLCHAIN_CACHE/local-path-provisioner-$LOCAL_PATH_VERSION
ROOTFS_OUT=$SYNOD_TOOLCHAIN_CACHE/rootfs-$DEBIAN_SUITE
NODE_IMAGE=${SYNOD_KIND_NODE_IMAGE:-synod.local/kind-node:$K8S_VERSION-kind$KIND_VERSION-rev$TOOLCHAIN_REV}
BASE_IMAGE_KIND=synod.local/kind-base:$KIND_VERSION-$DEBIAN_SUITE-rev$TOOLCHAIN_REV
PYTHON_BASE_IMAGE=synod.local/python:$PYTHON_BASE_TAG

# Long builds share two cores with everyone else.
NICE=${NICE:-nice -n 15}
export PATH="$TOOLCHAIN_BIN:$PATH"

log() { printf '[toolchain %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
