#!/usr/bin/env bash
# Build a Debian bookworm + Python 3.11 base image without pulling from any
# registry (air-gapped machines, CI without registry access). The result is
# equivalent to python:3.11-slim-bookworm for our purposes: same Debian, same
# Python minor version.
#
# usage: scripts/local_base_image.sh [IMAGE]   (default: byoc-base-local:bookworm)
set -euo pipefail

IMAGE="${1:-byoc-base-local:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "local base image $IMAGE already exists"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "debootstrap is missing; install it with: apt-get install -y debootstrap" >&2
    exit 1
fi

ROOTFS="$(mktemp -d /tmp/byoc-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

echo "debootstrap bookworm into $ROOTFS (about a minute)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >/tmp/byoc-debootstrap.log 2>&1 \
    || { tail -20 /tmp/byoc-debootstrap.log >&2; exit 1; }

# Outbound HTTPS may go through a proxy whose CA only the host's bundle holds.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
fi
# Debian marks its Python "externally managed"; images install into it with pip.
rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf python3 "$ROOTFS/usr/bin/python"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

tar -C "$ROOTFS" -c . | docker import \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "built $IMAGE"
