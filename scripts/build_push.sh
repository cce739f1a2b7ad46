#!/usr/bin/env bash
# Build the byoc images and push them to Amazon ECR, tagged with the git commit and `latest`.
#
# usage: scripts/build_push.sh [--region R] [--account A] [--registry HOST] [--tag T]
#                              [--images "train serve serve-cpu"] [--no-build] [--no-smoke]
#                              [--kms-key KEY] [--immutable-tags]
#
#   --region     AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / the CLI profile's)
#   --account    registry account (default: the caller's, from `aws sts get-caller-identity`)
#   --registry   registry host (default: ACCOUNT.dkr.ecr.REGION.amazonaws.com)
#   --tag        image tag besides `latest` (default: the git commit, with -dirty for local changes)
#   --images     what to build and push (default: BYOC_PUSH_IMAGES or "train serve serve-cpu"):
#                  train      byoc-train:latest -> repository byoc-train
#                  serve      byoc-serve:latest -> repository byoc-serve (GPU-capable, runs on CPU too)
#                  serve-cpu  byoc-serve:cpu    -> repository byoc-serve-cpu (ONNX Runtime, no torch,
#                             for ml.m5/ml.c5 and serverless endpoints; `scripts/build_images.sh cpu`)
#                  LOCAL=REPO an image already on this machine, pushed as REPO (never built here)
#   --no-build   push the local images as they are
#   --no-smoke   skip `byoc local smoke` (train, serve, predict, stop: about two minutes), which
#                otherwise runs on the images about to be pushed before anything is pushed; it
#                needs a training image and a serving image among --images (or byoc-train:latest
#                on this machine) and is skipped, saying so, for an --images list of neither
#   --kms-key    a repository created by this run is encrypted with this KMS key (ARN, ID or alias);
#                ECR sets a repository's encryption at creation only, so an existing repository
#                encrypted otherwise is an error (default: ECR's AES256)
#   --immutable-tags
#                no tag but `latest` can be moved once pushed (IMMUTABLE_WITH_EXCLUSION; jobs and
#                models name images by digest, and `latest` follows each push)
#
# Repositories are created when missing, with scan on push (the request byoc.aws.ecr.repository_request
# builds). Login uses
# `aws ecr get-login-password` (the AWS CLI honours AWS_PROFILE and AWS_ENDPOINT_URL).
# DOCKER names the container CLI (default docker).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
account="" registry="" tag="" build=1 smoke=1 kms_key="" immutable=0
images="${BYOC_PUSH_IMAGES:-train serve serve-cpu}"
DOCKER="${DOCKER:-docker}"
while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="${2:?--region needs a value}"; shift 2 ;;
        --account) account="${2:?--account needs a value}"; shift 2 ;;
        --registry) registry="${2:?--registry needs a value}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --images) images="${2:?--images needs a value}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-smoke) smoke=0; shift ;;
        --kms-key) kms_key="${2:?--kms-key needs a value}"; shift 2 ;;
        --immutable-tags) immutable=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

command -v "$DOCKER" >/dev/null 2>&1 \
    || die "'$DOCKER' is not installed: install Docker (https://docs.docker.com/engine/install/)"
"$DOCKER" info >/dev/null 2>&1 \
    || die "no Docker engine answers: start it (scripts/ensure_docker.sh, or: sudo systemctl start docker)"

if command -v aws >/dev/null 2>&1; then
    AWS=(aws)
elif python3 -c 'import awscli' >/dev/null 2>&1; then
    AWS=(python3 -m awscli)
else
    die "the AWS CLI is missing: install it (https://aws.amazon.com/cli/ or: pip install awscli)"
fi
[ -n "$region" ] || region="$("${AWS[@]}" configure get region 2>/dev/null || true)"
[ -n "$region" ] || die "no AWS region: pass --region or set AWS_DEFAULT_REGION"
aws_() { "${AWS[@]}" --region "$region" "$@"; }

errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
if ! caller="$(aws_ sts get-caller-identity --query Account --output text 2>"$errors")"; then
    die "no usable AWS credentials ($(tail -1 "$errors")). Run 'aws configure', set AWS_PROFILE, or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
fi
account="${account:-$caller}"
registry="${registry:-$account.dkr.ecr.$region.amazonaws.com}"
if [ -z "$tag" ]; then
    tag="$(git rev-parse --short=12 HEAD 2>/dev/null || echo untracked)"
    # A tag must not claim to be a commit the image does not match.
    git diff --quiet HEAD 2>/dev/null || tag="$tag-dirty"
fi

pairs=()
for item in ${images//,/ }; do
    case "$item" in
        train) pairs+=("byoc-train:latest=byoc-train") ;;
        serve) pairs+=("byoc-serve:latest=byoc-serve") ;;
        serve-cpu) pairs+=("byoc-serve:cpu=byoc-serve-cpu") ;;
        *=*) pairs+=("$item") ;;
        *) die "--images: unknown image '$item' (train, serve, serve-cpu or LOCAL=REPO)" ;;
    esac
done
[ ${#pairs[@]} -gt 0 ] || die "--images is empty"

if [ "$build" = 1 ]; then
    for item in ${images//,/ }; do
        case "$item" in
            train|serve) echo "== building $item"; scripts/build_images.sh "$item" ;;
            serve-cpu) echo "== building serve-cpu"; scripts/build_images.sh cpu ;;
        esac
    done
fi
for pair in "${pairs[@]}"; do
    "$DOCKER" image inspect "${pair%%=*}" >/dev/null 2>&1 \
        || die "local image ${pair%%=*} not found: build it first (scripts/build_images.sh) or drop --no-build"
done

# The images about to be pushed must train, serve and stop as SageMaker runs them.
if [ "$smoke" = 1 ]; then
    train_image="" serve_flags=()
    for pair in "${pairs[@]}"; do
        case "${pair#*=}" in
            byoc-train) train_image="${pair%%=*}" ;;
            byoc-serve|byoc-serve-cpu) serve_flags+=(--serve-image "${pair%%=*}") ;;
        esac
    done
    if [ ${#serve_flags[@]} -eq 0 ] && [ -z "$train_image" ]; then
        echo "== smoke skipped: --images has no training or serving image"
    else
        if [ -x .venv/bin/byoc ]; then BYOC=(.venv/bin/byoc); elif command -v byoc >/dev/null 2>&1; then BYOC=(byoc)
        else die "byoc is not installed, and the smoke test needs it: make venv (or pass --no-smoke)"; fi
        [ ${#serve_flags[@]} -gt 0 ] || serve_flags=(--serve-image byoc-serve:latest)
        echo "== smoke test: ${BYOC[*]} local smoke (about two minutes; --no-smoke skips it)"
        "${BYOC[@]}" local smoke --train-image "${train_image:-byoc-train:latest}" "${serve_flags[@]}" \
            || die "the smoke test failed: nothing was pushed (its table above says which check)"
    fi
fi

mutability=(--image-tag-mutability MUTABLE)
[ "$immutable" = 0 ] || mutability=(--image-tag-mutability IMMUTABLE_WITH_EXCLUSION
    --image-tag-mutability-exclusion-filters filterType=WILDCARD,filter=latest)
encryption=(--encryption-configuration encryptionType=AES256)
if [ -n "$kms_key" ]; then
    key_arn="$(aws_ kms describe-key --key-id "$kms_key" --query KeyMetadata.Arn --output text)" \
        || die "--kms-key $kms_key: no such KMS key in $region that you may describe"
    encryption=(--encryption-configuration "encryptionType=KMS,kmsKey=$key_arn")
fi
for pair in "${pairs[@]}"; do
    repo="${pair#*=}"
    if actual="$(aws_ ecr describe-repositories --registry-id "$account" --repository-names "$repo" \
            --query 'repositories[0].encryptionConfiguration.[encryptionType,kmsKey]' --output text 2>/dev/null)"; then
        if [ -n "$kms_key" ] && [ "$actual" != "KMS	$key_arn" ]; then
            die "ECR repository $repo exists encrypted otherwise ($actual), not with $key_arn; ECR sets a repository's encryption at creation only: delete it (its images with it) and push again, or drop --kms-key"
        fi
        echo "== ECR repository $repo exists; making sure scan on push is on"
        aws_ ecr put-image-scanning-configuration --registry-id "$account" --repository-name "$repo" \
            --image-scanning-configuration scanOnPush=true >/dev/null
        [ "$immutable" = 0 ] || aws_ ecr put-image-tag-mutability --registry-id "$account" \
            --repository-name "$repo" "${mutability[@]}" >/dev/null
    else
        echo "== creating ECR repository $repo (scan on push${kms_key:+, KMS key $key_arn}$([ "$immutable" = 0 ] || echo ', immutable tags but latest'))"
        aws_ ecr create-repository --registry-id "$account" --repository-name "$repo" \
            --image-scanning-configuration scanOnPush=true "${mutability[@]}" "${encryption[@]}" >/dev/null
    fi
done

echo "== logging in to $registry"
aws_ ecr get-login-password | "$DOCKER" login --username AWS --password-stdin "$registry" >/dev/null \
    || die "docker login to $registry failed"

for pair in "${pairs[@]}"; do
    local_image="${pair%%=*}" repo="${pair#*=}"
    for t in "$tag" latest; do
        echo "== pushing $registry/$repo:$t"
        "$DOCKER" tag "$local_image" "$registry/$repo:$t"
        "$DOCKER" push -q "$registry/$repo:$t" >/dev/null
    done
    echo "pushed $registry/$repo:$tag and :latest ($("$DOCKER" image inspect --format '{{index .RepoDigests 0}}' "$registry/$repo:$tag" 2>/dev/null || echo 'digest unknown'))"
done
