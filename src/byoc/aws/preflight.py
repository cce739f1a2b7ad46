"""Pre-flight checks: the cheap reads that catch a command's mistakes before anything is billed.

A typo in a bucket, a data prefix, `--arch` or `--model-data`, an image never pushed, or a role that
SageMaker cannot assume is otherwise found by AWS minutes into a billed job or endpoint. Each check
below reads (never writes), prints what it found and returns the problems it saw, one line each;
`run` gathers a command's problems and refuses the command with all of them (exit 2) before it
creates anything. `--skip-checks` on the command skips them, saying which.
"""

from __future__ import annotations

import fnmatch
import io
import json
import posixpath
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from byoc.aws import ecr, iam, target_models
from byoc.aws.session import NAME_TAG, Aws, error_code, find, owned, paginate, say
from byoc.core import architectures
from byoc.core.data_layout import SPLIT_DIR_NAMES
from byoc.core.errors import ConfigError

if TYPE_CHECKING:  # the specs only: their modules need not load for a check
    from byoc.aws.ec2_train import Ec2Spec
    from byoc.aws.endpoint import DeploySpec
    from byoc.aws.jobs import JobSpec
    from byoc.aws.transform_job import TransformSpec

META_FILE = target_models.META_FILE
# byoc.core.model_meta.FORMAT (that module needs Pillow, which the AWS layer does not install);
# tests/test_aws_preflight.py keeps them equal.
ARTIFACT_FORMAT = "byoc-image-classifier"
# Reading model.tar.gz for model.json stops after this many members or compressed bytes: the check
# must stay cheap on a large artifact whose model.json comes late.
MAX_MEMBERS = 64
MAX_BYTES = 256 * 2**20
MAX_META_BYTES = 2**20
# Listing a data prefix stops after this many keys (the counts then read "at least").
MAX_KEYS = 200_000
# The principal an execution role must trust: https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html
SAGEMAKER = "sagemaker.amazonaws.com"
PUSH = {  # how to push each default image (scripts/build_push.sh --images)
    ecr.TRAIN_REPO: "scripts/build_push.sh --images train",
    ecr.SERVE_REPO: "scripts/build_push.sh --images serve",
    f"{ecr.SERVE_REPO}-cpu": "scripts/build_push.sh --images serve-cpu",
}

Check = Callable[[], list[str]]


class PreflightFailed(ConfigError):
    """What the pre-flight checks found, one problem a line; nothing was created."""

    exit_code = 2


def run(command: str, checks: dict[str, Check], skip: bool) -> None:
    """Run `checks` (named for the --skip-checks notice) and refuse `command` with every problem they
    found, or, with `skip`, say what is not checked."""
    if skip:
        say(f"--skip-checks: {command} starts without checking {', '.join(checks)}")
        return
    problems: list[str] = []
    for check in checks.values():
        problems += check()
    if problems:
        raise PreflightFailed("\n".join(problems))


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key or prefix) of an s3:// URI."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def buckets(aws: Aws, uris: dict[str, str | None]) -> tuple[list[str], set[str]]:
    """Each bucket named by `uris` ({flag: s3 URI}) checked once: it exists and is in the command's region.
    Returns (problems, the buckets that passed)."""
    problems: list[str] = []
    passed: set[str] = set()
    seen: set[str] = set()
    for flag, uri in uris.items():
        if not uri or not uri.startswith("s3://"):
            continue
        bucket = split_s3(uri)[0]
        if bucket in seen:
            continue
        seen.add(bucket)
        found = bucket_problem(aws, bucket, flag)
        if found:
            problems.append(found)
        else:
            passed.add(bucket)
    return problems, passed


def bucket_problem(aws: Aws, bucket: str, flag: str) -> str | None:
    """Why SageMaker in this region cannot use `bucket`, or None. SageMaker reads training data and model
    artifacts from a bucket in its own region only:
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_S3DataSource.html ("Your input bucket must
    be in the same AWS region as your training job") and API_ContainerDefinition.html (ModelDataUrl).
    GetBucketLocation says null for us-east-1 and EU for eu-west-1:
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html"""
    try:
        location = aws.client("s3").get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":
            return f"{flag}: bucket {bucket} does not exist (create it, or `byoc data dogimages --bucket {bucket}`)"
        if error_code(exc) in ("AccessDenied", "403"):
            say(f"note: cannot read the region of bucket {bucket} ({error_code(exc)}); not checked")
            return None
        raise
    region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
    if region != aws.region:
        return (
            f"{flag}: bucket {bucket} is in {region}, and SageMaker in {aws.region} reads buckets of its own "
            f"region only: pass --region {region}, or copy the data to a bucket in {aws.region}"
        )
    return None


def _list(aws: Aws, bucket: str, prefix: str) -> tuple[list[str], bool]:
    """Keys under `prefix` (at most MAX_KEYS; the flag says whether there were more)."""
    keys: list[str] = []
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        keys += [o["Key"] for o in page.get("Contents", [])]
        if len(keys) >= MAX_KEYS:
            return keys[:MAX_KEYS], True
    return keys, False


def _split_dir(tops: set[str], names: tuple[str, ...]) -> str | None:
    for name in names:
        for candidate in (name, name.capitalize(), name.upper()):
            if candidate in tops:
                return candidate
    return None


def _tree(keys: Iterable[str], prefix: str) -> dict[str, dict[str, int]]:
    """{top folder: {class folder: files}} of the keys under `prefix` (hidden files and folder markers left out)."""
    tree: dict[str, dict[str, int]] = {}
    for key in keys:
        parts = key[len(prefix) :].split("/")
        if len(parts) < 2 or not parts[-1] or parts[-1].startswith("."):
            continue
        classes = tree.setdefault(parts[0], {})
        if len(parts) >= 3:
            classes[parts[1]] = classes.get(parts[1], 0) + 1
    return tree


def data_layout(aws: Aws, uri: str, flag: str = "--data") -> list[str]:
    """The `training` channel's layout, as the training image reads it (docs/guides/training.md "Data",
    byoc.training.data.find_splits): train/, valid/ and test/ folders of class folders, or one folder
    holding them. Prints the classes and files of each split in one line."""
    bucket, key = split_s3(uri)
    prefix = key.strip("/") + "/" if key.strip("/") else ""
    keys, more = _list(aws, bucket, prefix)
    if not keys:
        return [f"{flag} {uri}: no objects under it (upload the data: `byoc data dogimages --bucket {bucket}`)"]
    tree = _tree(keys, prefix)
    if _split_dir(set(tree), SPLIT_DIR_NAMES["train"]) is None and len(tree) == 1:
        wrapper = next(iter(tree))  # an archive unpacked as-is: dogImages/train/...
        prefix += wrapper + "/"
        tree = _tree(keys, prefix)
    splits = {split: _split_dir(set(tree), names) for split, names in SPLIT_DIR_NAMES.items()}
    missing = [split for split, folder in splits.items() if folder is None]
    if missing:
        have, folders = ", ".join(sorted(tree)) or "none", ", ".join(f"{m}/" for m in missing)
        return [
            f"{flag} {uri}: missing {folders} (found: {have}); the training image needs train/, valid/ and test/ "
            "folders of class folders (the dogImages layout)"
        ]
    problems = _split_problems(uri, flag, {split: tree[folder] for split, folder in splits.items() if folder})
    at_least = "at least " if more else ""
    say(
        f"data s3://{bucket}/{prefix}: "
        + ", ".join(
            f"{folder}/ {len(tree[folder])} classes {at_least}{sum(tree[folder].values())} files"
            for folder in splits.values()
            if folder
        )
    )
    return problems


def _split_problems(uri: str, flag: str, splits: dict[str, dict[str, int]]) -> list[str]:
    problems = [
        f"{flag} {uri}: {split}/ holds no class folders with files (expected {split}/CLASS/IMAGE)"
        for split, classes in splits.items()
        if not classes
    ]
    extra = sorted((set(splits["valid"]) | set(splits["test"])) - set(splits["train"]))
    if splits["train"] and extra:
        problems.append(
            f"{flag} {uri}: class folder(s) in valid/ or test/ but not in train/: {', '.join(extra[:5])}"
            f"{' ...' if len(extra) > 5 else ''} (every class needs training images)"
        )
    return problems


def arch(hyperparameters: dict[str, str]) -> list[str]:
    """`--arch` is a torchvision classification model byoc can train (the list in byoc.core.architectures)."""
    name = hyperparameters.get("arch")
    found = architectures.problem(name) if name else None
    return [found] if found else []


def image(aws: Aws, uri: str, push: str) -> list[str]:
    """The image is in this region's ECR; prints its digest. `push` says how to push it."""
    try:
        detail = ecr.describe(aws, uri)
    except ValueError:
        say(f"note: image {uri} is not in this region's Amazon ECR: not checked")
        return []
    if detail is None:
        return [f"image {uri} is not in ECR: push it first ({push})"]
    pushed = detail.get("imagePushedAt")
    say(f"image {uri}: {detail['imageDigest']}" + (f" (pushed {pushed:%Y-%m-%d %H:%M})" if pushed else ""))
    return []


def model_data(aws: Aws, uri: str, name: str) -> list[str]:
    """`--model-data` is an object on S3 and a byoc artifact: its model.tar.gz holds model.json."""
    bucket, key = split_s3(uri)
    try:
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return [_no_model(aws, uri, name)]
        if error_code(exc) in ("AccessDenied", "403"):
            say(f"note: cannot read --model-data {uri} ({error_code(exc)}); not checked")
            return []
        raise
    try:
        meta = _model_json(body)
    except _TooLong:
        say(f"note: no {META_FILE} in the first {MAX_MEMBERS} files or {MAX_BYTES // 2**20} MiB of {uri}; not checked")
        return []
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as exc:
        return [f"--model-data {uri}: not a model.tar.gz (gzip'd tar) with {META_FILE} ({exc})"]
    finally:
        body.close()
    if meta is None:
        return [f"--model-data {uri}: holds no {META_FILE}: not a byoc model (a training job's model.tar.gz)"]
    if meta.get("format") != ARTIFACT_FORMAT:
        return [f"--model-data {uri}: its {META_FILE} is not a {ARTIFACT_FORMAT} artifact's"]
    say(f"model data {uri}: {meta.get('arch', '?')}, {len(meta.get('labels', []))} classes")
    return []


def _no_model(aws: Aws, uri: str, name: str) -> str:
    """The problem of a --model-data key that does not exist, with the artifacts that do."""
    bucket, key = split_s3(uri)
    hint = ""
    if "JOB" in key.split("/"):
        hint = " (JOB stands for the training job's name: `byoc status --name NAME` lists them, train-job prints it)"
    found = [f"s3://{bucket}/{k}" for k in _list(aws, bucket, f"byoc/{name}/")[0] if k.endswith("/model.tar.gz")]
    if found:
        hint += f"; models of {name}: {', '.join(sorted(found)[-3:])}"
    return f"--model-data {uri}: no such object{hint}"


class _TooLong(Exception):
    """More of the archive than MAX_BYTES or MAX_MEMBERS was read before model.json."""


class _Bounded(io.RawIOBase):
    """A read-only stream over `body` that refuses to read past MAX_BYTES."""

    def __init__(self, body: Any):
        self.body, self.read_so_far = body, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.read_so_far >= MAX_BYTES:
            raise _TooLong()
        chunk = self.body.read(min(len(buffer), MAX_BYTES - self.read_so_far))
        buffer[: len(chunk)] = chunk
        self.read_so_far += len(chunk)
        return len(chunk)


def _model_json(body: Any) -> dict | None:
    """model.json of a model.tar.gz streamed from `body` (never all of it in memory); None when absent."""
    with tarfile.open(fileobj=io.BufferedReader(_Bounded(body)), mode="r|gz") as archive:
        for count, member in enumerate(archive):
            if count >= MAX_MEMBERS:
                raise _TooLong()
            if member.isfile() and posixpath.normpath(member.name) == META_FILE:
                if member.size > MAX_META_BYTES:
                    raise ValueError(f"{META_FILE} is {member.size} bytes")
                handle = archive.extractfile(member)
                return json.loads(handle.read()) if handle else None
    return None


def role(aws: Aws, arn: str, name: str, reads: dict[str, str]) -> list[str]:
    """The execution role exists, trusts SageMaker, and (when it is byoc's role for `name`) its own
    policy lets it read each of `reads` ({flag: s3 URI}). A role made elsewhere may read through policies
    this cannot evaluate (managed policies, bucket policies, boundaries): that is said, not refused."""
    role_name, parts = arn.rsplit("/", 1)[-1], arn.split(":")
    if ":role/" not in arn or len(parts) < 6 or parts[4] != aws.account:
        say(f"note: role {arn} is not a role of account {aws.account}: not checked")
        return []
    found = find(aws.client("iam").get_role, RoleName=role_name)
    if found is None:
        return [
            f"--role {arn}: no such role (`byoc sagemaker-role --name {name} --bucket BUCKET` makes one, or pass "
            "--role ARN)"
        ]
    trusted = _principals(_document(found["Role"].get("AssumeRolePolicyDocument")))
    if SAGEMAKER not in trusted:
        return [
            f"--role {arn}: its trust policy does not let {SAGEMAKER} assume it (it trusts: "
            f"{', '.join(sorted(trusted)) or 'no service'}); SageMaker could not run as it"
        ]
    if role_name != iam.role_name(name, "sagemaker") or not owned(found["Role"].get("Tags"), name):
        readable = ", ".join(reads.values())
        say(f"note: role {role_name} is not byoc's for {name}: whether it may read {readable} is not checked")
        return []
    return _unreadable(aws, role_name, name, reads)


def _document(document: Any) -> dict:
    """A policy document as GetRole/GetRolePolicy return it: parsed, or URL-encoded JSON."""
    return json.loads(urllib.parse.unquote(document)) if isinstance(document, str) else (document or {})


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _principals(trust: dict) -> set[str]:
    """The services a trust policy lets assume the role (sts:AssumeRole, Allow)."""
    services: set[str] = set()
    for statement in _listed_statements(trust):
        actions = _listed(statement.get("Action"))
        if statement.get("Effect") != "Allow" or not any(fnmatch.fnmatchcase("sts:AssumeRole", a) for a in actions):
            continue
        principal = statement.get("Principal")
        if isinstance(principal, dict):
            services.update(_listed(principal.get("Service")))
    return services


def _listed_statements(document: dict) -> list[dict]:
    statement = document.get("Statement", [])
    return [statement] if isinstance(statement, dict) else list(statement)


def _unreadable(aws: Aws, role_name: str, name: str, reads: dict[str, str]) -> list[str]:
    """The problems of `reads` that the role's inline policies do not allow s3:GetObject on."""
    client = aws.client("iam")
    statements = [
        statement
        for policy in paginate(client, "list_role_policies", "PolicyNames", RoleName=role_name)
        for statement in _listed_statements(
            _document(client.get_role_policy(RoleName=role_name, PolicyName=policy)["PolicyDocument"])
        )
        if statement.get("Effect") == "Allow"
        and any(fnmatch.fnmatchcase("s3:GetObject", a) for a in _listed(statement.get("Action")))
    ]
    problems = []
    for flag, uri in reads.items():
        bucket, key = split_s3(uri)
        # an object under the prefix (or the object itself): what the job or endpoint reads
        target = f"arn:{aws.partition}:s3:::{bucket}/{key.rstrip('/')}" + ("" if key.endswith(".tar.gz") else "/x")
        if not any(fnmatch.fnmatchcase(target, r) for s in statements for r in _listed(s.get("Resource"))):
            problems.append(
                f"{flag} {uri}: role {role_name} may not read it (s3:GetObject): run `byoc sagemaker-role --name "
                f"{name} --bucket {bucket} --data-prefix {key.rsplit('/', 1)[0] if key.endswith('.tar.gz') else key}`"
            )
    return problems


def endpoint(aws: Aws, name: str) -> list[str]:
    """The endpoint a Lambda function calls exists."""
    found = find(aws.client("sagemaker").describe_endpoint, EndpointName=name)
    if found is None:
        return [f"endpoint {name} does not exist: deploy it first (`byoc deploy --name {name} --model-data ...`)"]
    say(f"endpoint {name}: {found['EndpointStatus']}")
    return []


def _push(uri: str) -> str:
    match = ecr.IMAGE_URI.match(uri)
    return PUSH.get(match["repo"] if match else "", "docker push it to ECR")


class _Buckets:
    """The buckets of a command's S3 URIs, checked once (the first check of a command); the checks that
    read a bucket run only when it passed, so a missing bucket is one line, not three."""

    def __init__(self, aws: Aws, uris: dict[str, str | None]):
        self.aws, self.uris, self.passed = aws, uris, set[str]()

    def check(self) -> list[str]:
        problems, self.passed = buckets(self.aws, self.uris)
        return problems

    def ok(self, uri: str) -> bool:
        return split_s3(uri)[0] in self.passed


def training(aws: Aws, spec: JobSpec, command: str, skip: bool) -> None:
    """train-job and tune: buckets, data layout, --arch, image, role."""
    s3 = _Buckets(aws, {"--data": spec.data, "--output": spec.output})
    checks: dict[str, Check] = {
        "buckets": s3.check,
        "data layout": lambda: data_layout(aws, spec.data) if s3.ok(spec.data) else [],
        "--arch": lambda: arch(spec.hyperparameters),
        "image": lambda: image(aws, spec.image, _push(spec.image)),
        "role": lambda: role(aws, spec.role, spec.name, {"--data": spec.data}),
    }
    run(command, checks, skip)


def isolation_weights(operation: str, request: dict) -> None:
    """Refuse a training or tuning job that runs network-isolated (EnableNetworkIsolation: no outbound
    traffic from the container, https://docs.aws.amazon.com/sagemaker/latest/dg/mkt-algo-model-internet-free.html),
    starts from pretrained weights, and has no `weights` channel: its container could not download them and
    would fail minutes into a billed job. Checks the final request, whatever set its fields; --skip-checks
    does not skip it (the job cannot succeed)."""
    definitions = [request]
    if operation == "CreateHyperParameterTuningJob":
        definitions = [
            d for d in [request.get("TrainingJobDefinition"), *request.get("TrainingJobDefinitions", [])] if d
        ]
    for definition in definitions:
        hyperparameters = definition.get("HyperParameters", definition.get("StaticHyperParameters", {}))
        channels = {c["ChannelName"] for c in definition.get("InputDataConfig", [])}
        if definition.get("EnableNetworkIsolation") and _pretrained(hyperparameters) and "weights" not in channels:
            arch = hyperparameters.get("arch", "resnet50")
            name = next((t["Value"] for t in request.get("Tags", []) if t["Key"] == NAME_TAG), "NAME")
            raise PreflightFailed(
                f"{operation}: network isolation with pretrained=true needs the pretrained weights as the 'weights' "
                f"channel, and there is none: run `byoc weights upload --name {name} --arch {arch} --bucket BUCKET` "
                "first, or set --no-pretrained"
            )


def _pretrained(hyperparameters: dict[str, str]) -> bool:
    """The job's `pretrained` as the training image reads it (its default when absent)."""
    from byoc.training.contract import TrainConfig  # no torch: the hyperparameters' own rules

    return TrainConfig.from_dict({k: v for k, v in hyperparameters.items() if k == "pretrained"}).pretrained


def ec2(aws: Aws, spec: Ec2Spec, skip: bool) -> None:
    """ec2-train: bucket, data layout, --arch, image (the instance's role is the command's own)."""
    s3 = _Buckets(aws, {"--data": spec.data})
    checks: dict[str, Check] = {
        "bucket": s3.check,
        "data layout": lambda: data_layout(aws, spec.data) if s3.ok(spec.data) else [],
        "--arch": lambda: arch(spec.hyperparameters),
        "image": lambda: image(aws, spec.image, _push(spec.image)),
    }
    run("ec2-train", checks, skip)


def deploy(aws: Aws, spec: DeploySpec, skip: bool) -> None:
    """deploy: buckets (the model, or the multi-model prefix, and async outputs), the model, image, role."""
    flag = "--multi-model" if spec.multi_model else "--model-data"
    uris: dict[str, str | None] = {flag: spec.model_data}
    if spec.asynchronous:
        uris["--async-output"] = spec.asynchronous.output
        uris["--async-error-output"] = spec.asynchronous.error_output
    s3 = _Buckets(aws, uris)
    checks: dict[str, Check] = {
        "buckets": s3.check,
        "model data": lambda: (
            [] if spec.multi_model or not s3.ok(spec.model_data) else model_data(aws, spec.model_data, spec.name)
        ),
        "image": lambda: image(aws, spec.image, _push(spec.image)),
        "role": lambda: role(aws, spec.role, spec.name, {flag: spec.model_data}),
    }
    run("deploy", checks, skip)


def transform(aws: Aws, spec: TransformSpec, skip: bool) -> None:
    """batch-transform: buckets, the model, input objects, image, role."""
    s3 = _Buckets(aws, {"--model-data": spec.model_data, "--input": spec.input, "--output": spec.output})
    checks: dict[str, Check] = {
        "buckets": s3.check,
        "model data": lambda: model_data(aws, spec.model_data, spec.name) if s3.ok(spec.model_data) else [],
        "input": lambda: input_objects(aws, spec.input) if s3.ok(spec.input) else [],
        "image": lambda: image(aws, spec.image, _push(spec.image)),
        "role": lambda: role(aws, spec.role, spec.name, {"--model-data": spec.model_data, "--input": spec.input}),
    }
    run("batch-transform", checks, skip)


def lambda_endpoint(aws: Aws, name: str, skip: bool) -> None:
    """lambda-deploy: the endpoint the function calls exists."""
    run("lambda-deploy", {"endpoint": lambda: endpoint(aws, name)}, skip)


def input_objects(aws: Aws, uri: str) -> list[str]:
    """A transform job's input prefix holds objects (SageMaker transforms every one of them)."""
    bucket, prefix = split_s3(uri)
    keys, more = _list(aws, bucket, prefix)
    objects = [k for k in keys if not k.endswith("/")]
    if not objects:
        return [f"--input {uri}: no objects under it"]
    say(f"input {uri}: {'at least ' if more else ''}{len(objects)} objects")
    return []
