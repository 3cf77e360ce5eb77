#!/usr/bin/env bash
# Build, without pulling anything, the container images the offline kind
# cluster needs, from the binaries of build-k8s.sh / build-tools.sh and from
# Debian root filesystems made with mmdebstrap:
#   rootfs   Debian bookworm root filesystems (cached tarballs)
#   k8s      registry.k8s.io/* images tagged exactly as `kubeadm config images list`
#            expects, plus the local-path provisioner and helper; saved into one
#            archive for `ctr images import`
#   base     the kind base image (kind's base files from the pinned kind module)
#   node     the kind node image, assembled the way `kind build node-image` does
#   python   a Debian+Python base image, the local stand-in for python:3.12-slim
# Usage: build-images.sh [rootfs|slim|k8s|base|node|python]...   (default: all but python)
# FORCE=1 rebuilds images that already exist.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
FORCE=${FORCE:-0}
ROOTFS_DIR=$SYNOD_TOOLCHAIN_CACHE/rootfs
IMAGES_DIR=$SYNOD_TOOLCHAIN_CACHE/images
mkdir -p "$ROOTFS_DIR" "$IMAGES_DIR"
LPP_IMAGE=synod.local/local-path-provisioner:$LOCAL_PATH_VERSION
LPH_IMAGE=synod.local/local-path-helper:$DEBIAN_SUITE
K8S_IMAGES_TAR=$IMAGES_DIR/k8s-images-$K8S_VERSION-rev$TOOLCHAIN_REV.tar

# The legacy builder suffices for these one-liners; BuildKit only where the
# client has it (a newer client without the buildx plugin refuses BuildKit).
docker_build_quiet() {
  local err; err=$(mktemp)
  if docker buildx version >/dev/null 2>&1; then docker build -q "$@" >/dev/null 2>"$err" || { cat "$err" >&2; rm -f "$err"; return 1; }
  else DOCKER_BUILDKIT=0 docker build -q "$@" >/dev/null 2>"$err" || { cat "$err" >&2; rm -f "$err"; return 1; }; fi
  rm -f "$err"
}
have_image() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }
kind_dir() { go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'; }

# ---------------------------------------------------------------- rootfs
# mmdebstrap_tar <name> <packages,comma,separated> [customize-hook...]
# -> $ROOTFS_DIR/<name>-<hash>.tar (hash over suite, packages and hooks)
mmdebstrap_tar() {
  local name=$1 pkgs=$2; shift 2
  local key; key=$(printf '%s\n' "$DEBIAN_SUITE" "$pkgs" "$@" | sha1sum | cut -c1-10)
  local out=$ROOTFS_DIR/$name-$DEBIAN_SUITE-$key.tar
  if [ -s "$out" ]; then echo "$out"; return 0; fi
  command -v mmdebstrap >/dev/null || bash "$HERE/docker-up.sh" >&2
  log "rootfs $name: mmdebstrap $DEBIAN_SUITE (+ $pkgs)"
  local hooks=()
  for h in "$@"; do hooks+=(--customize-hook="$h"); done
  local start; start=$(date +%s)
  # No mirror argument: mmdebstrap takes the host's apt sources for the suite.
  rm -rf "$out.tmp"
  mmdebstrap --quiet --format=tar --variant=minbase --include="$pkgs" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*' \
    "${hooks[@]}" "$DEBIAN_SUITE" "$out.tmp" >&2
  mv "$out.tmp" "$out"
  log "rootfs $name: $(du -h "$out" | cut -f1) in $(( $(date +%s) - start ))s"
  echo "$out"
}

rootfs_slim() { mmdebstrap_tar slim-iptables "iptables,ca-certificates"; }

rootfs_kind_base() {
  # kind's base package list (images/base/Dockerfile of the pinned kind) plus
  # Debian's containerd, runc and CNI plugins instead of kind's own builds.
  mmdebstrap_tar kind-base "systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,nfs-common,open-iscsi,bash,ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins"
}

rootfs_python() {
  mmdebstrap_tar python "python3,python3-venv,ca-certificates,libexpat1" \
    'chroot "$1" python3 -m venv /opt/python && chroot "$1" /opt/python/bin/pip --version'
}

# import_dir <dir> <image> [--change ...]... : tar a directory as a one-layer image
import_dir() {
  local dir=$1 image=$2; shift 2
  tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . | docker import "$@" - "$image" >/dev/null
}

# ---------------------------------------------------------------- k8s images
build_k8s_images() {
  local all=(registry.k8s.io/kube-apiserver:$K8S_VERSION registry.k8s.io/kube-controller-manager:$K8S_VERSION
             registry.k8s.io/kube-scheduler:$K8S_VERSION registry.k8s.io/kube-proxy:$K8S_VERSION
             registry.k8s.io/etcd:$ETCD_IMAGE_TAG registry.k8s.io/coredns/coredns:$COREDNS_VERSION
             registry.k8s.io/pause:$PAUSE_IMAGE_TAG "$LPP_IMAGE" "$LPH_IMAGE")
  local missing=0 i
  for i in "${all[@]}"; do have_image "$i" || missing=1; done
  case $BUILT_THIS_RUN in *" k8s "*) return 0 ;; esac
  if [ $missing = 0 ] && [ -s "$K8S_IMAGES_TAR" ]; then log "k8s images: cached"; return 0; fi
  bash "$HERE/build-k8s.sh"; bash "$HERE/build-tools.sh" etcd coredns pause local-path
  # The image list must be what kubeadm of this version expects.
  local expected; expected=$("$K8S_OUT/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | sort)
  local planned; planned=$(printf '%s\n' "${all[@]:0:7}" | sort)
  [ "$expected" = "$planned" ] || die "kubeadm expects:\n$expected\nbut the plan is:\n$planned"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  local path_env='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    mkdir -p "$tmp/$c/usr/local/bin" "$tmp/$c/tmp"; cp "$K8S_OUT/$c" "$tmp/$c/usr/local/bin/"
    import_dir "$tmp/$c" "registry.k8s.io/$c:$K8S_VERSION" --change "$path_env" --change "ENTRYPOINT [\"/usr/local/bin/$c\"]"
  done
  mkdir -p "$tmp/etcd/usr/local/bin" "$tmp/etcd/var/etcd" "$tmp/etcd/var/lib/etcd" "$tmp/etcd/tmp"
  cp "$ETCD_OUT/etcd" "$ETCD_OUT/etcdctl" "$tmp/etcd/usr/local/bin/"
  import_dir "$tmp/etcd" "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" --change "$path_env" --change 'CMD ["/usr/local/bin/etcd"]'
  mkdir -p "$tmp/coredns"; cp "$COREDNS_OUT/coredns" "$tmp/coredns/coredns"
  import_dir "$tmp/coredns" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" --change 'ENTRYPOINT ["/coredns"]' --change 'EXPOSE 53 53/udp'
  mkdir -p "$tmp/pause"; cp "$PAUSE_OUT/pause" "$tmp/pause/pause"
  import_dir "$tmp/pause" "registry.k8s.io/pause:$PAUSE_IMAGE_TAG" --change 'USER 65535:65535' --change 'ENTRYPOINT ["/pause"]'
  mkdir -p "$tmp/lpp/usr/bin" "$tmp/lpp/tmp"; cp "$LOCAL_PATH_OUT/local-path-provisioner" "$tmp/lpp/usr/bin/"
  import_dir "$tmp/lpp" "$LPP_IMAGE" --change "$path_env" --change 'CMD ["local-path-provisioner"]'

  # kube-proxy and the local-path helper need a userland: Debian minbase + iptables.
  local slim; slim=$(rootfs_slim)
  mkdir -p "$tmp/proxy"; tar -C "$tmp/proxy" -xf "$slim"
  cp "$K8S_OUT/kube-proxy" "$tmp/proxy/usr/local/bin/"
  install -m 0755 "$HERE/files/iptables-wrapper" "$tmp/proxy/usr/sbin/iptables-wrapper"
  for cmd in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf iptables-wrapper "$tmp/proxy/usr/sbin/$cmd"
  done
  import_dir "$tmp/proxy" "registry.k8s.io/kube-proxy:$K8S_VERSION" --change "$path_env" --change 'ENTRYPOINT ["/usr/local/bin/kube-proxy"]'
  build_slim FORCE

  log "k8s images: saving ${#all[@]} images to $K8S_IMAGES_TAR"
  docker save "${all[@]}" -o "$K8S_IMAGES_TAR.tmp" && mv "$K8S_IMAGES_TAR.tmp" "$K8S_IMAGES_TAR"
  BUILT_THIS_RUN+="k8s "
}

# Debian minbase + iptables as an image: the local-path helper, and the base of
# synod/chaos-tools (nsenter + iptables).
build_slim() {
  if [ "${1:-}" != FORCE ] && have_image "$LPH_IMAGE"; then return 0; fi
  local slim; slim=$(rootfs_slim)
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' - "$LPH_IMAGE" < "$slim" >/dev/null
}

# ---------------------------------------------------------------- kind base
BUILT_THIS_RUN=" "
build_base() {
  case $BUILT_THIS_RUN in *" base "*) return 0 ;; esac
  if have_image "$BASE_IMAGE_KIND"; then log "kind base: cached ($BASE_IMAGE_KIND)"; return 0; fi
  bash "$HERE/docker-up.sh"
  local tar; tar=$(rootfs_kind_base)
  local kdir; kdir=$(kind_dir)/images/base
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  local r=$tmp/rootfs; mkdir -p "$r"; tar -C "$r" -xf "$tar"
  log "kind base: kind $KIND_VERSION base files + Debian containerd/runc/CNI"
  # kind's files, with the modes its Dockerfile gives them.
  install -d "$r/kind/bin" "$r/LICENSES" "$r/etc/kubernetes/manifests" "$r/etc/cni/net.d"
  install -m 0755 "$kdir"/files/usr/local/bin/* "$r/usr/local/bin/"
  cp -r "$kdir/files/kind/." "$r/kind/"; chmod -R a+rX,go-w "$r/kind"; chmod 0755 "$r"/kind/bin/*
  install -m 0644 "$kdir"/files/LICENSES/* "$r/LICENSES/"
  install -m 0644 "$kdir"/files/etc/crictl.yaml "$r/etc/"
  install -m 0644 "$kdir"/files/etc/containerd/* "$r/etc/containerd/"
  install -d "$r/etc/default" "$r/etc/sysctl.d" "$r/etc/systemd/system/kubelet.service.d"
  install -m 0644 "$kdir"/files/etc/default/* "$r/etc/default/"
  install -m 0644 "$kdir"/files/etc/sysctl.d/* "$r/etc/sysctl.d/"
  install -m 0644 "$kdir"/files/etc/systemd/system/*.service "$kdir"/files/etc/systemd/system/*.slice "$r/etc/systemd/system/"
  install -m 0644 "$kdir"/files/etc/systemd/system/kubelet.service.d/* "$r/etc/systemd/system/kubelet.service.d/"
  # Debian's binaries where kind expects its own builds.
  ln -sf /usr/bin/containerd "$r/usr/local/bin/containerd"
  ln -sf /usr/bin/ctr "$r/usr/local/bin/ctr"
  ln -sf /usr/bin/containerd-shim-runc-v2 "$r/usr/local/bin/containerd-shim-runc-v2"
  ln -sf /usr/sbin/runc "$r/usr/local/sbin/runc"
  rm -rf "$r/opt/cni/bin"; install -d "$r/opt/cni"; ln -s /usr/lib/cni "$r/opt/cni/bin"
  # Privileged pods: containerd runs runc through the capability wrapper (see runc-capwrap/).
  install -m 0755 /usr/local/sbin/runc-capwrap "$r/usr/local/sbin/runc-capwrap"
  sed -i -e "s|sandbox_image = .*|sandbox_image = \"registry.k8s.io/pause:$PAUSE_IMAGE_TAG\"|" \
         -e 's|^\(\s*\)SystemdCgroup = true|&\n\1BinaryName = "/usr/local/sbin/runc-capwrap"|' "$r/etc/containerd/config.toml"
  grep -q 'BinaryName = "/usr/local/sbin/runc-capwrap"' "$r/etc/containerd/config.toml" || die "containerd config patch failed"
  # The base runtime spec kind generates with `ctr oci spec` + jq.
  chroot "$r" sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
  jq -e .ociVersion "$r/etc/containerd/cri-base.json" >/dev/null
  # Debian starts containerd from its own unit; kind's unit (enabled below) replaces it.
  rm -f "$r/lib/systemd/system/containerd.service"
  # The systemd trimming of kind's Dockerfile.
  find "$r/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$r"/lib/systemd/system/multi-user.target.wants/* "$r"/etc/systemd/system/*.wants/* \
        "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/sockets.target.wants/*udev* \
        "$r"/lib/systemd/system/sockets.target.wants/*initctl* "$r"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >> "$r/etc/systemd/journald.conf"
  ln -sf /lib/systemd/systemd "$r/sbin/init"
  chroot "$r" sh -c 'systemctl enable kubelet.service containerd.service undo-mount-hacks.service && systemctl mask systemd-binfmt.service' >/dev/null 2>&1
  rm -rf "$r/tmp/"* "$r/var/tmp/"*
  import_dir "$r" "$BASE_IMAGE_KIND" --change 'ENV container=docker' \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]'
  # `docker import --change` cannot set STOPSIGNAL: a one-line build can (no pull).
  printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$BASE_IMAGE_KIND" | docker_build_quiet -t "$BASE_IMAGE_KIND" -
  BUILT_THIS_RUN+="base "
  log "kind base: $BASE_IMAGE_KIND ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE_KIND" | numfmt --to=iec))"
}

# ---------------------------------------------------------------- kind node
build_node() {
  if have_image "$NODE_IMAGE"; then log "kind node: cached ($NODE_IMAGE)"; return 0; fi
  bash "$HERE/docker-up.sh"
  build_base; build_k8s_images; bash "$HERE/build-k8s.sh"
  local start; start=$(date +%s)
  local name=synod-nodeimage-build-$$
  local kdir; kdir=$(kind_dir)
  local tmp; tmp=$(mktemp -d)
  trap "docker rm -f -v $name >/dev/null 2>&1 || true; rm -rf $tmp" RETURN
  docker run -d --name "$name" --privileged --security-opt seccomp=unconfined \
    --entrypoint sleep "$BASE_IMAGE_KIND" infinity >/dev/null
  log "kind node: installing kubeadm, kubelet, kubectl into /usr/bin"
  for b in kubeadm kubelet kubectl; do
    docker cp "$K8S_OUT/$b" "$name:/usr/bin/$b"
    docker exec "$name" chown root:root "/usr/bin/$b"; docker exec "$name" chmod 0755 "/usr/bin/$b"
  done
  printf '%s' "$K8S_VERSION" | docker exec -i "$name" sh -c 'mkdir -p /kind/manifests && cat > /kind/version'
  docker exec -i "$name" sh -c 'cat > /kind/manifests/default-cni.yaml' < "$HERE/files/default-cni.yaml"
  docker exec -i "$name" sh -c 'mkdir -p /etc/cni/net.d && cat > /etc/cni/net.d/10-synod-ptp.conflist' < "$HERE/files/10-synod-ptp.conflist"
  # kind's default storage manifest, with our locally built images.
  sed -n '/^const defaultStorageManifest = `/,/^`/p' "$kdir/pkg/build/nodeimage/const_storage.go" \
    | sed -e '1d' -e '$d' -e "s|\` + storageProvisionerImage + \`|$LPP_IMAGE|g" -e "s|\` + storageHelperImage + \`|$LPH_IMAGE|g" \
    > "$tmp/default-storage.yaml"
  grep -q "$LPP_IMAGE" "$tmp/default-storage.yaml" && ! grep -q '` +' "$tmp/default-storage.yaml" || die "storage manifest extraction failed"
  docker exec -i "$name" sh -c 'cat > /kind/manifests/default-storage.yaml' < "$tmp/default-storage.yaml"

  log "kind node: importing images into the node's containerd (k8s.io namespace)"
  docker exec "$name" sh -c 'nohup containerd > /var/log/containerd-build.log 2>&1 &'
  local ok=0
  for _ in $(seq 60); do docker exec "$name" ctr version >/dev/null 2>&1 && { ok=1; break; }; sleep 1; done
  [ $ok = 1 ] || { docker exec "$name" cat /var/log/containerd-build.log >&2; die "containerd did not start in the build container"; }
  docker exec -i "$name" ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests - < "$K8S_IMAGES_TAR"
  for ref in $(docker exec "$name" ctr --namespace=k8s.io images list -q | grep -v '@sha256'); do
    docker exec "$name" ctr --namespace=k8s.io images label "$ref" io.cri-containerd.pinned=pinned >/dev/null
  done
  docker exec "$name" ctr --namespace=k8s.io images list -q >&2
  # (PID 1 is `sleep`, which reaps nothing: a zombie containerd counts as gone.)
  docker exec "$name" sh -c 'pkill -x containerd; for i in $(seq 30); do ps -o stat= -C containerd | grep -qv Z || exit 0; sleep 1; done; exit 1'
  docker exec "$name" sh -c 'rm -rf /tmp/* /var/log/containerd-build.log'
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' "$name" "$NODE_IMAGE" >/dev/null
  log "kind node: $NODE_IMAGE ($(docker image inspect -f '{{.Size}}' "$NODE_IMAGE" | numfmt --to=iec)) in $(( $(date +%s) - start ))s"
}

# ---------------------------------------------------------------- python base
build_python() {
  if have_image "$PYTHON_BASE_IMAGE"; then log "python base: cached ($PYTHON_BASE_IMAGE)"; return 0; fi
  bash "$HERE/docker-up.sh"
  local tar; tar=$(rootfs_python)
  docker import --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$PYTHON_BASE_IMAGE" < "$tar" >/dev/null
  docker run --rm "$PYTHON_BASE_IMAGE" python -c 'import sys, ssl; print("python base:", sys.version.split()[0])' >&2
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(k8s base node)
for t in "${targets[@]}"; do
  case $t in
    rootfs) rootfs_slim >/dev/null; rootfs_kind_base >/dev/null; rootfs_python >/dev/null ;;
    k8s) build_k8s_images ;; slim) build_slim ;; base) build_base ;; node) build_node ;; python) build_python ;;
    *) die "unknown target $t" ;;
  esac
done
