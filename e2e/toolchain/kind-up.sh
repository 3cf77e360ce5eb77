#!/usr/bin/env bash
# Create (or reuse) the kind cluster "$SYNOD_CLUSTER_NAME" (default: synod).
#
#   offline (default): every image is built here from sources (build-*.sh) and
#                      cached under $SYNOD_TOOLCHAIN_CACHE; nothing is pulled.
#   SYNOD_KIND_PUBLIC=1: a machine with internet: kind's default public node
#                      image (kindest/node) and whatever kind/helm/kubectl are
#                      on PATH (else they are built from the Go module proxy).
#   SYNOD_KIND_NODES=3: one control plane + two workers (offline: pod routes
#                      between nodes are set up by this script). Unset: a
#                      healthy cluster of any size is reused, a new one has
#                      one node.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
PUBLIC=${SYNOD_KIND_PUBLIC:-0}
# Unset: reuse a healthy cluster of any size, create a single node.
NODES_WANTED=${SYNOD_KIND_NODES:-}
NODES=${NODES_WANTED:-1}
CTX=kind-$SYNOD_CLUSTER_NAME
KUBECONFIG_OUT=${SYNOD_KUBECONFIG:-$SYNOD_TOOLCHAIN_CACHE/kubeconfig-$SYNOD_CLUSTER_NAME}
start=$(date +%s)

bash "$HERE/docker-up.sh"
if [ "$PUBLIC" = 1 ]; then
  for t in kind helm kubectl; do command -v $t >/dev/null || bash "$HERE/build-tools.sh" $t; done
  image_args=()
else
  bash "$HERE/build-tools.sh" kind helm kubectl
  bash "$HERE/build-images.sh" node
  image_args=(--image "$NODE_IMAGE")
fi
log "tools: $(kind version) | helm $(helm version --short) | kubectl $(kubectl version --client -o json | jq -r .clientVersion.gitVersion)"

healthy() {
  kind get clusters 2>/dev/null | grep -qx "$SYNOD_CLUSTER_NAME" || return 1
  [ -z "$NODES_WANTED" ] || [ "$(kind get nodes --name "$SYNOD_CLUSTER_NAME" | wc -l)" = "$NODES_WANTED" ] || return 1
  if [ "$PUBLIC" != 1 ]; then  # a cluster of an older node image is rebuilt
    [ "$(docker inspect -f '{{.Config.Image}}' "$SYNOD_CLUSTER_NAME-control-plane" 2>/dev/null)" = "$NODE_IMAGE" ] || return 1
  fi
  kind get kubeconfig --name "$SYNOD_CLUSTER_NAME" > "$KUBECONFIG_OUT" 2>/dev/null || return 1
  timeout 20 kubectl --kubeconfig "$KUBECONFIG_OUT" get --raw /readyz >/dev/null 2>&1
}

if healthy; then
  log "cluster $SYNOD_CLUSTER_NAME already up: reusing it"
else
  if kind get clusters 2>/dev/null | grep -qx "$SYNOD_CLUSTER_NAME"; then
    log "cluster $SYNOD_CLUSTER_NAME exists but is unhealthy, of another size or of another node image: recreating"
    kind delete cluster --name "$SYNOD_CLUSTER_NAME"
  fi
  cfg=$(mktemp); trap 'rm -f "$cfg"' EXIT
  {
    echo "kind: Cluster"
    echo "apiVersion: kind.x-k8s.io/v1alpha4"
    echo "name: $SYNOD_CLUSTER_NAME"
    echo "nodes:"
    echo "- role: control-plane"
    for _ in $(seq 2 "$NODES"); do echo "- role: worker"; done
  } > "$cfg"
  log "kind create cluster --name $SYNOD_CLUSTER_NAME ($NODES node(s)${image_args[*]:+, image ${image_args[1]}})"
  kind create cluster --config "$cfg" "${image_args[@]}" --kubeconfig "$KUBECONFIG_OUT" --wait 5m
fi
kind export kubeconfig --name "$SYNOD_CLUSTER_NAME" >/dev/null 2>&1 || true   # also into ~/.kube/config
kind get kubeconfig --name "$SYNOD_CLUSTER_NAME" > "$KUBECONFIG_OUT"
K="kubectl --kubeconfig $KUBECONFIG_OUT"

if [ "$PUBLIC" != 1 ] && [ "$(kind get nodes --name "$SYNOD_CLUSTER_NAME" | wc -l)" -gt 1 ]; then
  # Offline multi-node: each node gets a ptp conflist for its own podCIDR and
  # routes to every other node's podCIDR (what kindnetd would do).
  declare -A cidr ip
  for n in $(kind get nodes --name "$SYNOD_CLUSTER_NAME"); do
    for _ in $(seq 60); do c=$($K get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true); [ -n "$c" ] && break; sleep 2; done
    [ -n "$c" ] || die "node $n has no podCIDR"
    cidr[$n]=$c; ip[$n]=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$n")
  done
  # ptp's ipMasq would masquerade pod-to-pod traffic across nodes (it only
  # exempts the node's own range), so it is off, and each node masquerades
  # only traffic that leaves the cluster's pod network.
  pod_net=$($K get cm -n kube-system kubeadm-config -o jsonpath='{.data.ClusterConfiguration}' | sed -n 's/^ *podSubnet: *//p')
  pod_net=${pod_net:-10.244.0.0/16}
  for n in "${!cidr[@]}"; do
    sed -e "s|10.244.0.0/24|${cidr[$n]}|" -e 's|"ipMasq": true|"ipMasq": false|' "$HERE/files/10-synod-ptp.conflist" \
      | docker exec -i "$n" sh -c 'cat > /etc/cni/net.d/10-synod-ptp.conflist'
    docker exec "$n" sh -c "iptables -t nat -C POSTROUTING -s $pod_net ! -d $pod_net -j MASQUERADE 2>/dev/null || iptables -t nat -A POSTROUTING -s $pod_net ! -d $pod_net -j MASQUERADE"
    for m in "${!cidr[@]}"; do
      [ "$n" = "$m" ] || docker exec "$n" ip route replace "${cidr[$m]}" via "${ip[$m]}"
    done
  done
  # Pods started on a worker before its conflist was fixed got wrong addresses.
  for n in "${!cidr[@]}"; do
    $K get pods -A --field-selector "spec.nodeName=$n" -o json \
      | jq -r --arg c "${cidr[$n]%.*}" '.items[] | select(.spec.hostNetwork != true) | select((.status.podIP // "") | startswith($c) | not) | "\(.metadata.namespace) \(.metadata.name)"' \
      | while read -r ns pod; do $K -n "$ns" delete pod "$pod" --wait=false; done
  done
fi

log "waiting for nodes, kube-system and the default StorageClass"
$K wait --for=condition=Ready nodes --all --timeout=300s
$K -n kube-system rollout status deploy/coredns --timeout=300s
$K -n local-path-storage rollout status deploy/local-path-provisioner --timeout=300s 2>/dev/null || true
$K get storageclass
log "cluster $SYNOD_CLUSTER_NAME ready in $(( $(date +%s) - start ))s; kubeconfig: $KUBECONFIG_OUT (context $CTX)"
