#!/usr/bin/env bash
# Debian rootfs for the kind node image, from debootstrap: the packages kind's own base
# image (sigs.k8s.io/kind images/base/Dockerfile) installs, with containerd, runc and the
# CNI plugins taken from Debian. Cached as a tarball under $LK_CACHE.
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

tarball="$LK_CACHE/node-rootfs-$DEBIAN_SUITE.tar"
if [ -s "$tarball" ]; then log "node rootfs cached: $tarball"; exit 0; fi
have debootstrap || apt_install debootstrap

pkgs=(systemd systemd-sysv dbus conntrack iptables nftables iproute2 ethtool util-linux mount kmod
      libseccomp2 pigz e2fsprogs bash ca-certificates curl jq procps
      containerd runc containernetworking-plugins)
rootfs=$(mktemp -d "$LK_CACHE/node-rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $DEBIAN_SUITE node rootfs (~1-2 min)"
start=$SECONDS
"${NICE[@]}" debootstrap --variant=minbase --include="$(IFS=,; echo "${pkgs[*]}")" \
  "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$LK_CACHE/node-debootstrap.log" 2>&1 \
  || { tail -n 30 "$LK_CACHE/node-debootstrap.log" >&2; die "debootstrap failed"; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
log "node rootfs in $((SECONDS - start)) s: $tarball"
