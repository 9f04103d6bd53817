#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim-bookworm from Debian's archive,
# for machines that reach Debian's mirrors but no image registry.
#   scripts/make_base_image.sh [TAG]      (default: dogbreed-base:bookworm)
# Needs root and debootstrap (installed here if missing). Skips work when TAG exists.
set -euo pipefail

tag=${1:-dogbreed-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag already exists"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "make_base_image.sh: debootstrap needs root; run it with sudo or pull a public base image" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

root=$(mktemp -d /tmp/dogbreed-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm into $root (about a minute)"
debootstrap --variant=minbase --arch=amd64 \
    --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >/dev/null
# Same trims the slim images make: no apt lists or caches in the base.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "built base image $tag"
