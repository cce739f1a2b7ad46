"""Image URIs in the account's ECR registry (scripts/build_push.sh pushes them)."""

from __future__ import annotations

import re

from byoc.aws.session import Aws, find

TRAIN_REPO = "byoc-train"
SERVE_REPO = "byoc-serve"
# An image in a private ECR registry, by tag or by digest (the forms SageMaker's ContainerDefinition.Image
# and AlgorithmSpecification.TrainingImage take).
IMAGE_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repo>[^:@]+)(:(?P<tag>[^:@]+)|@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def registry(aws: Aws) -> str:
    suffix = "amazonaws.com.cn" if aws.partition == "aws-cn" else "amazonaws.com"
    return f"{aws.account}.dkr.ecr.{aws.region}.{suffix}"


def image_uri(aws: Aws, repo: str, tag: str = "latest") -> str:
    """The default image for a command: what build_push.sh pushed as `latest`."""
    return f"{registry(aws)}/{repo}:{tag}"


def describe(aws: Aws, image: str) -> dict | None:
    """DescribeImages' detail of an ECR image of this region (by tag, `latest` when none, or by digest);
    None when the repository or the image is not there. Raises ValueError for an image that is not in
    this region's ECR (nothing to ask). https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_DescribeImages.html
    """
    match = IMAGE_URI.match(image)
    if match is None or match["region"] != aws.region:
        raise ValueError(f"{image} is not an image in Amazon ECR in {aws.region}")
    image_id = {"imageDigest": match["digest"]} if match["digest"] else {"imageTag": match["tag"] or "latest"}
    described = find(
        aws.client("ecr").describe_images,
        registryId=match["account"],
        repositoryName=match["repo"],
        imageIds=[image_id],
    )
    details = (described or {}).get("imageDetails")
    return details[0] if details else None


def pinned(aws: Aws, image: str) -> str:
    """`image` by its digest (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO@sha256:...), so a job or model names
    the image's content: a new push under the same tag makes a new model, and a model never changes under
    an endpoint. Unchanged when it is not an image of this region's ECR or not found there (the pre-flight
    checks of byoc.aws.preflight say so)."""
    match = IMAGE_URI.match(image)
    if match is None or match["digest"]:
        return image
    try:
        detail = describe(aws, image)
    except ValueError:
        return image
    if detail is None:
        return image
    return f"{image.split('/', 1)[0]}/{match['repo']}@{detail['imageDigest']}"
