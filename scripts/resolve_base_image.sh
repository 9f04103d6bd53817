#!/usr/bin/env bash
# resolve_base_image.sh [BASE_IMAGE] [LOCAL_TAG]: print the base image to build on.
# A given BASE_IMAGE wins. Otherwise the public python:3.11-slim-bookworm when it is
# present or can be pulled; where no registry answers, the Debian-built stand-in
# (made by make_base_image.sh on first use). Progress goes to stderr.
set -euo pipefail
wanted=${1:-}
local_tag=${2:-dogbreed-base:bookworm}
public=python:3.11-slim-bookworm

if [ -n "$wanted" ]; then echo "$wanted"; exit 0; fi
if docker image inspect "$public" >/dev/null 2>&1 || docker pull -q "$public" >/dev/null 2>&1; then
    echo "$public"; exit 0
fi
echo "cannot pull $public; building the equivalent $local_tag from Debian's archive" >&2
"$(dirname "$0")/make_base_image.sh" "$local_tag" >&2
echo "$local_tag"
