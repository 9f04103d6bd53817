#!/bin/sh
# pip-install-locked LOCKFILE: install a hash-pinned lock into /opt/venv, with a C
# compiler present only for the duration (some pins are sdists with C extensions).
# Uses the BuildKit secret `ca_bundle`, when non-empty, as pip's trust store.
set -eu
lock=$1
if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi

build_deps="gcc libc6-dev"
# python:3.11-slim ships Python.h; Debian's own python3 needs the -dev package.
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h")))' \
    || build_deps="$build_deps python3-dev"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-mark showmanual > /tmp/manual-packages
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $build_deps >/dev/null

pip install --require-hashes -r "$lock"

# Remove the compiler again, keeping any runtime library a wheel links against.
apt-mark auto '.*' >/dev/null
xargs -r apt-mark manual < /tmp/manual-packages >/dev/null
find /opt/venv -type f -name '*.so*' -exec ldd {} + 2>/dev/null \
    | awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u \
    | xargs -r dpkg-query -S 2>/dev/null | cut -d: -f1 | sort -u \
    | xargs -r apt-mark manual >/dev/null || true
apt-get purge -y -qq --auto-remove -o APT::AutoRemove::RecommendsImportant=false >/dev/null
rm -rf /var/lib/apt/lists/* /tmp/manual-packages "$lock" /root/.cache
