#!/usr/bin/env bash
# Assemble a kind node image without any registry, the way `kind build node-image` does
# (sigs.k8s.io/kind pkg/build/nodeimage), from locally built parts:
#   1. local/kind-base:<suite>: the debootstrap rootfs (node-rootfs.sh) + kind's own base
#      files (entrypoint, systemd units, containerd config) read from the kind module,
#      crictl; containerd, runc and CNI plugins are Debian's.
#   2. the images kubeadm and kind expect, under their exact names, built from the Go
#      binaries (build-k8s.sh, build-tools.sh): kube-apiserver, kube-controller-manager,
#      kube-scheduler, kube-proxy, etcd, coredns, pause, kindnetd (a stand-in, see below),
#      local-path-provisioner and its helper.
#   3. $NODE_IMAGE: base + kubeadm/kubelet/kubectl in /usr/bin, /kind/version, kind's
#      default CNI and storage manifests, and every image above preloaded into the
#      node's containerd (k8s.io namespace, pinned), then `docker commit`.
# Usage: node-image.sh [base]   (base: stop after step 1; FORCE=1 rebuilds the node image,
#        FORCE_BASE=1 the base image; every other part is reused when present)
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

"$LK_HERE/engine.sh" start
# The scripts baked into the node's images: a change to them rebuilds those images and the node
# image (each carries this digest as a label), so an old cache never hides a new kindnetd.
FILES_LABEL=ecommerce-etl.node-files
FILES_SHA=$(cat "$LK_HERE/files/kindnetd.sh" "$LK_HERE/files/select-iptables.sh" | sha256sum | cut -c1-16)
files_current() { [ "$(docker image inspect -f "{{ index .Config.Labels \"$FILES_LABEL\" }}" "$1" 2>/dev/null)" = "$FILES_SHA" ]; }
if image_exists "$NODE_IMAGE" && [ "${FORCE:-0}" != 1 ]; then
  if files_current "$NODE_IMAGE"; then log "$NODE_IMAGE exists"; exit 0; fi
  log "$NODE_IMAGE predates the current node scripts (files/kindnetd.sh, files/select-iptables.sh): rebuilding it"
fi

"$LK_HERE/node-rootfs.sh"
"$LK_HERE/build-tools.sh" crictl

KIND_SRC=$(mod_dir "sigs.k8s.io/kind@$KIND_VERSION")
KBIN="$LK_BIN/kubernetes-$K8S_VERSION"
ROOTFS_IMAGE="local/kind-node-rootfs:$DEBIAN_SUITE"
BASE_IMAGE="local/kind-base:$DEBIAN_SUITE"
WORK="$LK_CACHE/nodeimage"
mkdir -p "$WORK"

dbuild() {  # dbuild TAG DIR
  "${NICE[@]}" docker build -q -t "$1" "$2" >/dev/null || die "docker build $1 failed"
}

# --- kind's default manifests and image names, read from the kind module -----------------
manifests="$WORK/manifests"
if [ ! -s "$manifests/default-cni.yaml" ]; then
  gen="$LK_SRC/kind-manifests-$KIND_VERSION"
  mkdir -p "$gen" "$manifests"
  for f in const_cni.go const_storage.go; do
    sed 's/^package nodeimage$/package main/' "$KIND_SRC/pkg/build/nodeimage/$f" >"$gen/$f"
  done
  printf 'module local/kind-manifests\n\ngo 1.22\n' >"$gen/go.mod"
  cat >"$gen/main.go" <<'GO'
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	dir := os.Args[1]
	must(os.WriteFile(dir+"/default-cni.yaml", []byte(defaultCNIManifest), 0o644))
	must(os.WriteFile(dir+"/default-storage.yaml", []byte(defaultStorageManifest), 0o644))
	images := append(append([]string{}, defaultCNIImages...), defaultStorageImages...)
	must(os.WriteFile(dir+"/images.txt", []byte(strings.Join(images, "\n")+"\n"), 0o644))
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
GO
  (cd "$gen" && GOFLAGS=-mod=mod go run . "$manifests")
fi
KINDNETD_IMAGE=$(grep kindnetd "$manifests/images.txt")
PROVISIONER_IMAGE=$(grep local-path-provisioner "$manifests/images.txt")
HELPER_IMAGE=$(grep local-path-helper "$manifests/images.txt")

# --- 1. base image ---------------------------------------------------------------------
# One change to kind's containerd config: restrict_oom_score_adj = true. Without
# CAP_SYS_RESOURCE (not in this sandbox's bounding set) no process may lower its
# oom_score_adj, and runc then fails every pod sandbox (kubelet asks for -998) with
#   "nsexec: failed to update /proc/self/oom_score_adj: Permission denied" /
#   "runc create failed: unable to start container process: can't get final child's PID
#    from pipe: EOF"
# With it, containerd clamps the value to its own (kind sets it for rootless nodes too).
if ! image_exists "$ROOTFS_IMAGE"; then
  log "docker import node rootfs -> $ROOTFS_IMAGE"
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$LK_CACHE/node-rootfs-$DEBIAN_SUITE.tar" "$ROOTFS_IMAGE" >/dev/null
fi
if ! image_exists "$BASE_IMAGE" || [ "${FORCE_BASE:-0}" = 1 ]; then
  d="$WORK/base"; rm -rf "$d"; mkdir -p "$d"
  cp -r "$KIND_SRC/images/base/files" "$d/files"; chmod -R u+w "$d/files"
  cp "$LK_BIN/crictl-$CRICTL_VERSION/crictl" "$d/crictl"
  # Mirrors kind's images/base/Dockerfile (legacy-builder compatible: no COPY --chmod).
  cat >"$d/Dockerfile" <<DOCKERFILE
FROM $ROOTFS_IMAGE
COPY files/ /
COPY crictl /usr/local/bin/crictl
RUN set -eux; \
    chmod 0755 /usr/local/bin/* /kind /kind/bin /kind/bin/*; \
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete; \
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
          /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
          /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*; \
    echo "ReadKMsg=no" >> /etc/systemd/journald.conf; \
    ln -sf /usr/lib/systemd/systemd /sbin/init; \
    for b in containerd ctr containerd-shim-runc-v2; do ln -sf /usr/bin/\$b /usr/local/bin/\$b; done; \
    mkdir -p /opt/cni/bin /etc/kubernetes/manifests; \
    for p in /usr/lib/cni/*; do ln -sf "\$p" /opt/cni/bin/; done; \
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service; \
    systemctl mask systemd-binfmt.service; \
    sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml; \
    grep -q 'restrict_oom_score_adj = true' /etc/containerd/config.toml; \
    ctr oci spec \
      | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
      | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json; \
    containerd --version; runc --version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
  log "building $BASE_IMAGE"
  dbuild "$BASE_IMAGE" "$d"
fi

[ "${1:-}" != base ] || exit 0
"$LK_HERE/build-k8s.sh"
"$LK_HERE/build-tools.sh" pause etcd coredns local-path

# --- 2. images kubeadm and kind expect --------------------------------------------------
major_minor=${K8S_VERSION#v}; major_minor=${major_minor%.*}
pause_new=$(grep -o 'PauseVersion = "[^"]*"' "$(mod_dir "k8s.io/kubernetes@$K8S_VERSION")/cmd/kubeadm/app/constants/constants.go" | cut -d'"' -f2)
etcd_tag="${ETCD_VERSION#v}-0"
IMAGES=()

# scratch_image REF BINARY [ENTRYPOINT-PATH]: a static binary in an otherwise empty image.
scratch_image() {
  local ref=$1 bin=$2 at=${3:-/usr/local/bin/$(basename "$2")} d
  IMAGES+=("$ref")
  image_exists "$ref" && return 0
  d="$WORK/img-$(basename "$bin")"; rm -rf "$d"; mkdir -p "$d"; cp "$bin" "$d/"
  printf 'FROM scratch\nCOPY %s %s\nENV PATH=/usr/local/bin:/usr/bin:/bin\n' "$(basename "$bin")" "$at" >"$d/Dockerfile"
  [ -z "${3:-}" ] || printf 'ENTRYPOINT ["%s"]\n' "$at" >>"$d/Dockerfile"
  log "image $ref"
  dbuild "$ref" "$d"
}
# debian_image REF DIR: DIR holds a Dockerfile body (FROM is the node rootfs).
debian_image() {
  local ref=$1 d=$2
  IMAGES+=("$ref")
  files_current "$ref" && return 0
  sed -i "1i FROM $ROOTFS_IMAGE\nLABEL $FILES_LABEL=$FILES_SHA" "$d/Dockerfile"
  log "image $ref"
  dbuild "$ref" "$d"
}

for c in kube-apiserver kube-controller-manager kube-scheduler; do
  scratch_image "registry.k8s.io/$c:$K8S_VERSION" "$KBIN/$c"
done
scratch_image "registry.k8s.io/etcd:$etcd_tag" "$LK_BIN/etcd-$ETCD_VERSION/etcd"
scratch_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$LK_BIN/coredns-$COREDNS_VERSION/coredns" /coredns
scratch_image "registry.k8s.io/pause:$PAUSE_TAG" "$LK_BIN/pause/pause" /pause
[ "$pause_new" = "$PAUSE_TAG" ] || scratch_image "registry.k8s.io/pause:$pause_new" "$LK_BIN/pause/pause" /pause
scratch_image "${PROVISIONER_IMAGE#docker.io/}" "$LK_BIN/local-path-$LOCAL_PATH_VERSION/local-path-provisioner"

# Pods that program iptables must use the node's mode (legacy or nft), as the official
# images do with iptables-wrapper: files/select-iptables.sh picks the mode whose tables
# already hold more rules.
# kube-proxy needs iptables/conntrack: the node rootfs has them. kubeadm's DaemonSet runs
# /usr/local/bin/kube-proxy, which selects the iptables mode and execs the real binary.
d="$WORK/img-kube-proxy"; rm -rf "$d"; mkdir -p "$d"; cp "$KBIN/kube-proxy" "$d/kube-proxy.bin"
cp "$LK_HERE/files/select-iptables.sh" "$d/select-iptables"
printf '#!/bin/sh\n/usr/local/bin/select-iptables\nexec /usr/local/lib/kube-proxy "$@"\n' >"$d/kube-proxy"
chmod 0755 "$d/select-iptables" "$d/kube-proxy"
cat >"$d/Dockerfile" <<'DF'
COPY kube-proxy.bin /usr/local/lib/kube-proxy
COPY select-iptables kube-proxy /usr/local/bin/
DF
debian_image "registry.k8s.io/kube-proxy:$K8S_VERSION" "$d"

# local-path helper: runs the provisioner's setup/teardown shell scripts.
d="$WORK/img-helper"; rm -rf "$d"; mkdir -p "$d"; printf 'CMD ["/bin/sh"]\n' >"$d/Dockerfile"
debian_image "${HELPER_IMAGE#docker.io/}" "$d"

# kindnetd stand-in. kind's kindnetd is not published as a Go module, so this does its job
# with the same CNI plugins (ptp + host-local + portmap) kind uses: write the CNI config for
# the node's podCIDR, masquerade traffic leaving the pod subnet and route every other node's
# podCIDR to that node. It enforces no NetworkPolicy (see netpol.sh).
d="$WORK/img-kindnetd"; rm -rf "$d"; mkdir -p "$d"
cp "$LK_HERE/files/kindnetd.sh" "$d/kindnetd"
cp "$LK_HERE/files/select-iptables.sh" "$d/select-iptables"
chmod 0755 "$d/kindnetd" "$d/select-iptables"
printf 'COPY select-iptables /usr/local/bin/\nCOPY kindnetd /bin/kindnetd\nENTRYPOINT ["/bin/kindnetd"]\n' >"$d/Dockerfile"
debian_image "${KINDNETD_IMAGE#docker.io/}" "$d"

# --- 3. the node image ------------------------------------------------------------------
log "assembling $NODE_IMAGE"
start=$SECONDS
cid=$(docker run -d --entrypoint=sleep --security-opt seccomp=unconfined "$BASE_IMAGE" infinity)
trap 'docker rm -f -v "$cid" >/dev/null 2>&1 || true' EXIT
for b in kubeadm kubelet kubectl; do
  docker cp "$KBIN/$b" "$cid:/usr/bin/$b"
done
docker exec "$cid" sh -c 'chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl; mkdir -p /kind/manifests'
docker exec -i "$cid" sh -c 'cat >/kind/version' <<<"$K8S_VERSION"
docker cp "$manifests/default-cni.yaml" "$cid:/kind/manifests/default-cni.yaml"
docker cp "$manifests/default-storage.yaml" "$cid:/kind/manifests/default-storage.yaml"
docker exec "$cid" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &
  for i in $(seq 30); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 1; done
  cat /tmp/containerd.log; exit 1'
for ref in "${IMAGES[@]}"; do
  log "preloading $ref"
  docker save "$ref" | docker exec -i "$cid" ctr --namespace=k8s.io images import \
    --all-platforms --no-unpack --digests - >/dev/null
done
docker exec "$cid" ctr --namespace=k8s.io images list -q | grep -v '^sha256:' | while read -r ref; do
  docker exec "$cid" ctr --namespace=k8s.io images label "$ref" io.cri-containerd.pinned=pinned >/dev/null
done
docker exec "$cid" sh -c 'pkill containerd; sleep 2; rm -rf /tmp/* /run/containerd'
# kubeadm expects exactly these (kind writes /kind/version and checks the images list).
docker exec "$cid" kubeadm config images list --kubernetes-version "$K8S_VERSION" >&2
docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
  --change 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' --change "LABEL $FILES_LABEL=$FILES_SHA" \
  "$cid" "$NODE_IMAGE" >/dev/null
log "built $NODE_IMAGE in $((SECONDS - start)) s ($major_minor node, images: ${IMAGES[*]})"
