#!/usr/bin/env bash
# build_and_push.sh: build dogbreed-train and dogbreed-serve (linux/amd64, `make build`),
# push both to Amazon ECR under the git commit and `latest`, print the two image URIs.
#
#   scripts/build_and_push.sh            # or: make push
#
# stdout carries only the result, two lines for `eval`:
#   TRAIN_IMAGE_URI=<registry>/dogbreed-train:<commit>
#   SERVE_IMAGE_URI=<registry>/dogbreed-serve:<commit>
# Progress and errors go to stderr.
#
# Environment (all optional):
#   AWS_REGION / AWS_DEFAULT_REGION   else the AWS config's region
#   AWS_ACCOUNT_ID                    else STS GetCallerIdentity
#   AWS_PROFILE, AWS_ENDPOINT_URL     the standard AWS variables, honoured by the CLI
#   ECR_REGISTRY                      registry host, default <account>.dkr.ecr.<region>.amazonaws.com
#   TRAIN_REPOSITORY, SERVE_REPOSITORY  ECR repository names (dogbreed-train, dogbreed-serve)
#   TRAIN_IMAGE, SERVE_IMAGE          local images to push (dogbreed-train:latest, dogbreed-serve:latest)
#   IMAGE_TAG                         default: the git commit (12 chars, "-dirty" with local changes)
#   SKIP_BUILD=1                      push the local images as they are
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[push] %s\n' "$*" >&2; }
die() { printf '[push] error: %s\n' "$*" >&2; exit 1; }

TRAIN_REPOSITORY=${TRAIN_REPOSITORY:-dogbreed-train}
SERVE_REPOSITORY=${SERVE_REPOSITORY:-dogbreed-serve}
TRAIN_IMAGE=${TRAIN_IMAGE:-dogbreed-train:latest}
SERVE_IMAGE=${SERVE_IMAGE:-dogbreed-serve:latest}

# awscli v1 or v2 as `aws`; failing that the awscli Python package (same commands).
if command -v aws >/dev/null 2>&1; then
    AWS=(aws)
elif python3 -c 'import awscli' >/dev/null 2>&1; then
    AWS=(python3 -m awscli)
else
    die "the AWS CLI is missing: install it (pip install awscli, or AWS CLI v2) and configure credentials"
fi

docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running, and may this user use it?)"

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-$("${AWS[@]}" configure get region 2>/dev/null || true)}}
[ -n "$region" ] || die "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or 'aws configure set region <region>'"
export AWS_DEFAULT_REGION=$region

account=${AWS_ACCOUNT_ID:-}
if [ -z "$account" ]; then
    # Also the credentials check: nothing below works without them.
    if ! account=$("${AWS[@]}" sts get-caller-identity --query Account --output text 2>/tmp/build_and_push.sts.$$); then
        reason=$(tail -1 /tmp/build_and_push.sts.$$); rm -f /tmp/build_and_push.sts.$$
        die "no usable AWS credentials (sts get-caller-identity failed: ${reason}); run 'aws configure' or set AWS_PROFILE"
    fi
    rm -f /tmp/build_and_push.sts.$$
fi
[[ "$account" =~ ^[0-9]{12}$ ]] || die "not an AWS account id: '$account'"
registry=${ECR_REGISTRY:-$account.dkr.ecr.$region.amazonaws.com}

if [ -z "${IMAGE_TAG:-}" ]; then
    IMAGE_TAG=$(git rev-parse --short=12 HEAD 2>/dev/null) || die "not a git checkout: set IMAGE_TAG"
    # An image built from uncommitted files must not pass for the commit.
    git diff --quiet HEAD -- 2>/dev/null || IMAGE_TAG=$IMAGE_TAG-dirty
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building $TRAIN_IMAGE and $SERVE_IMAGE (make build, linux/amd64)"
    TRAIN_IMAGE=$TRAIN_IMAGE SERVE_IMAGE=$SERVE_IMAGE make build >&2 || die "make build failed"
fi
for image in "$TRAIN_IMAGE" "$SERVE_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "local image $image is missing (run make build)"
done

for repository in "$TRAIN_REPOSITORY" "$SERVE_REPOSITORY"; do
    if "${AWS[@]}" ecr describe-repositories --repository-names "$repository" >/dev/null 2>&1; then
        log "ECR repository $repository exists"
    else
        log "creating ECR repository $repository"
        "${AWS[@]}" ecr create-repository --repository-name "$repository" \
            --image-scanning-configuration scanOnPush=true >/dev/null \
            || die "cannot create ECR repository $repository (needs ecr:CreateRepository)"
    fi
done

log "logging Docker in to $registry"
"${AWS[@]}" ecr get-login-password | docker login --username AWS --password-stdin "$registry" >&2 \
    || die "docker login to $registry failed (needs ecr:GetAuthorizationToken)"

push() {  # push LOCAL_IMAGE REPOSITORY: tag with the commit and latest, push both
    local target=$registry/$2
    docker tag "$1" "$target:$IMAGE_TAG"
    docker tag "$1" "$target:latest"
    for tag in "$IMAGE_TAG" latest; do
        log "pushing $target:$tag"
        docker push "$target:$tag" >&2 || die "docker push $target:$tag failed (see above)"
    done
}
push "$TRAIN_IMAGE" "$TRAIN_REPOSITORY"
push "$SERVE_IMAGE" "$SERVE_REPOSITORY"

echo "TRAIN_IMAGE_URI=$registry/$TRAIN_REPOSITORY:$IMAGE_TAG"
echo "SERVE_IMAGE_URI=$registry/$SERVE_REPOSITORY:$IMAGE_TAG"
