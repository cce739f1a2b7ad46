"""Image URIs in the account's ECR registry (scripts/build_push.sh pushes them)."""

from __future__ import annotations

from byoc.aws.session import Aws

TRAIN_REPO = "byoc-train"
SERVE_REPO = "byoc-serve"


def registry(aws: Aws) -> str:
    suffix = "amazonaws.com.cn" if aws.partition == "aws-cn" else "amazonaws.com"
    return f"{aws.account}.dkr.ecr.{aws.region}.{suffix}"


def image_uri(aws: Aws, repo: str, tag: str = "latest") -> str:
    """The default image for a command: what build_push.sh pushed as `latest`."""
    return f"{registry(aws)}/{repo}:{tag}"
