"""Image URIs in the account's ECR registry (scripts/build_push.sh pushes them)."""

from __future__ import annotations

import re

from byoc.aws.session import Aws, AwsError, find, say

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


# With immutable tags on request, every tag but `latest` is immutable: build_push.sh moves `latest` to each
# new push (the default image of the commands), and jobs and models name an image by its digest (`pinned`).
# https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-tag-mutability.html
MOVING_TAGS = ("latest",)


def repository_request(repo: str, kms_key: str | None = None, immutable: bool = False) -> dict:
    """CreateRepository's request: scan on push; KMS encryption with `kms_key` when given (set at creation
    only: https://docs.aws.amazon.com/AmazonECR/latest/userguide/encryption-at-rest.html), else ECR's AES256;
    immutable tags (except MOVING_TAGS) on request."""
    request: dict = {
        "repositoryName": repo,
        "imageScanningConfiguration": {"scanOnPush": True},
        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": kms_key}
        if kms_key
        else {"encryptionType": "AES256"},
        **mutability(immutable),
    }
    return request


def mutability(immutable: bool) -> dict:
    """The tag mutability fields of CreateRepository and PutImageTagMutability."""
    if not immutable:
        return {"imageTagMutability": "MUTABLE"}
    return {
        "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": tag} for tag in MOVING_TAGS],
    }


def ensure_repository(aws: Aws, repo: str, kms_key: str | None = None, immutable: bool = False) -> dict:
    """The repository, created as `repository_request` says when missing (scripts/build_push.sh sends the
    same request). One that exists gets immutable tags when asked; its encryption cannot change after
    creation, so a repository encrypted otherwise than asked is refused with what to do (AwsError)."""
    client = aws.client("ecr")
    found = find(client.describe_repositories, repositoryNames=[repo])
    if found is None:
        say(
            f"creating ECR repository {repo} (scan on push{', KMS key ' + kms_key if kms_key else ''}"
            f"{', immutable tags but latest' if immutable else ''})"
        )
        return client.create_repository(**repository_request(repo, kms_key, immutable))["repository"]
    repository = found["repositories"][0]
    actual = repository.get("encryptionConfiguration", {"encryptionType": "AES256"})
    if kms_key and (actual["encryptionType"] != "KMS" or _key_arn(aws, actual.get("kmsKey")) != _key_arn(aws, kms_key)):
        raise AwsError(
            f"ECR repository {repo} exists encrypted with {actual.get('kmsKey') or actual['encryptionType']}, "
            f"not {kms_key}; ECR sets a repository's encryption at creation only: delete the repository "
            "(its images with it) and push again, or use its key"
        )
    if immutable:  # never made mutable again here: an owner's immutable tags stay
        client.put_image_tag_mutability(repositoryName=repo, **mutability(immutable))
    return repository


def _key_arn(aws: Aws, key: str | None) -> str | None:
    """The ARN of a KMS key given by ARN, ID or alias (KMS DescribeKey); None for none."""
    if not key:
        return None
    return aws.client("kms").describe_key(KeyId=key)["KeyMetadata"]["Arn"]
