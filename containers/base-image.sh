#!/usr/bin/env bash
# Make the base image localhost/debian:bookworm from Debian packages, without a registry:
# debootstrap (minbase) from the Debian mirror this machine's apt already uses, then
# `podman import`. Elsewhere, skip this and build FROM docker.io/library/debian:bookworm
# (containers/build.sh --base docker.io/library/debian:bookworm).
set -euo pipefail
IMAGE=${1:-localhost/debian:bookworm}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/podman.env"
if podman image exists "$IMAGE"; then
  echo "base image $IMAGE exists"; exit 0
fi
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then  # the first bookworm main source of the host's apt
  mirror=$(grep -hs -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
             | grep -v security | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//' \
             | head -1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$(mktemp -d /var/tmp/mailwarden-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror into $rootfs"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 \
  || { tail -30 "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# apt inside the image uses the same mirror
echo "deb $mirror bookworm main" > "$rootfs/etc/apt/sources.list"
echo "deb $mirror bookworm-updates main" >> "$rootfs/etc/apt/sources.list"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$IMAGE"
echo "base image $IMAGE imported"
