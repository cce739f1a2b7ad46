"""Pretrained weights for jobs that cannot reach the internet: `byoc weights upload` puts torchvision's
file for an architecture under the NAME prefix (s3://BUCKET/byoc/NAME/weights/ARCH/FILE.pth), checked
first; train-job and tune give a job that prefix as its `weights` channel when the file is there
(`channel`), and the training image loads it from /opt/ml/input/data/weights without the network.
"""

from __future__ import annotations

import importlib.util
import urllib.request
from pathlib import Path

from botocore.exceptions import ClientError

from byoc.aws import s3data, sagemaker_role
from byoc.aws.session import Aws, error_code, paginate, say
from byoc.core import architectures, pretrained
from byoc.core.errors import ConfigError
from byoc.training.contract import TrainConfig

CHANNEL = "weights"  # the channel name the training image reads (byoc.training.train.weights_file)


def prefix(name: str, arch: str) -> str:
    """The key prefix of NAME's weights for `arch` (no trailing slash)."""
    return f"{sagemaker_role.output_prefix(name)}/weights/{arch}"


def register(sub) -> None:
    """`byoc weights upload`."""
    from byoc.aws import commands  # it registers this module

    p = sub.add_parser("weights", help="pretrained weights on S3 for jobs without internet access")
    actions = p.add_subparsers(dest="weights_action", metavar="ACTION", required=True)
    u = commands._command(
        actions,
        "upload",
        "fetch torchvision's pretrained weights for --arch (or take --file), check them, upload them under NAME",
        _upload,
    )
    u.add_argument("--arch", required=True, help="the architecture the jobs train, e.g. resnet50")
    u.add_argument("--bucket", required=True, help="the bucket of the jobs' --output (default output: its byoc/NAME)")
    u.add_argument(
        "--file", type=Path, help="a weights file already downloaded (torchvision's, or a state dict of your own)"
    )
    u.add_argument(
        "--work-dir", type=Path, help="where the download is kept (default ~/.cache/byoc/weights; reused by a rerun)"
    )


def _upload(aws: Aws, args) -> int:
    upload(aws, args.name, args.arch, args.bucket, args.file, args.work_dir)
    return 0


def upload(aws: Aws, name: str, arch: str, bucket: str, file: Path | None = None, work_dir: Path | None = None) -> str:
    """The whole `byoc weights upload`: the file (downloaded unless given), checked, uploaded, and any
    other weights file under the prefix removed (a job's channel holds one). Returns the channel's URI."""
    found = architectures.problem(arch)
    if found:
        raise ConfigError(found)
    if not bucket or "/" in bucket:
        raise ConfigError(f"--bucket {bucket!r}: give the bucket name only")
    path = local_file(arch, file, work_dir or s3data.default_work_dir() / "weights")
    check(path, arch)
    s3data.ensure_bucket(aws, bucket)
    key_prefix = prefix(name, arch)
    s3data.upload_tree(aws, path.parent, bucket, key_prefix, workers=1, files=[path])
    remove_others(aws, bucket, key_prefix, path.name)
    uri = f"s3://{bucket}/{key_prefix}/"
    say(f"{arch} weights ready: {uri}{path.name}  (train-job and tune pass them as the '{CHANNEL}' channel)")
    return uri


def local_file(arch: str, file: Path | None, work_dir: Path) -> Path:
    """`file` when given; else torchvision's DEFAULT file for `arch`, downloaded into `work_dir` (an
    earlier download is reused when its bytes are still the published ones)."""
    if file is not None:
        if not file.is_file():
            raise ConfigError(f"--file {file}: no such file")
        return file
    url = pretrained.default_url(arch)
    dest = work_dir / url.rsplit("/", 1)[1]
    if dest.is_file() and pretrained.problem(dest, arch) is None:
        say(f"using {dest}, downloaded before")
        return dest
    return download(url, dest)


def download(url: str, dest: Path) -> Path:
    """Fetch `url` to `dest` (through a .part file, so a broken download is never taken for a whole one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    say(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        raise ConfigError(
            f"cannot download {url}: {exc}. On a machine without internet access, download it elsewhere "
            "and pass it with --file"
        ) from exc
    part.replace(dest)
    return dest


def _torch_here() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision"))


def check(path: Path, arch: str) -> None:
    """Refuse a file that would not start `arch`: torchvision's file of another architecture or with other
    bytes than published (byoc.core.pretrained), and where torch is installed, a file that does not load
    with weights_only or lacks the architecture's tensors. Without torch only torchvision's own file can
    be checked (by its hash), so a file of one's own is refused."""
    found = pretrained.problem(path, arch)
    if found:
        raise ConfigError(found)
    published = pretrained.arch_of(path.name) == arch
    if _torch_here():
        found = pretrained.tensors_problem(path, arch)
        if found:
            raise ConfigError(found)
        say(f"checked {path.name}: loads as {arch} weights (torch.load with weights_only)")
    elif published:
        say(f"checked {path.name}: its SHA-256 is the one torchvision published (torch is not installed here)")
    else:
        raise ConfigError(
            f"{path.name} is not a file torchvision published for {arch}, and without torch here its tensors "
            f"cannot be checked: install torch and torchvision, or upload torchvision's {pretrained.FILES[arch][0]}"
        )


def remove_others(aws: Aws, bucket: str, key_prefix: str, keep: str) -> None:
    """Delete the objects under the prefix other than `keep`: the training image refuses a channel with
    two weights files, since which one a job started from would be a guess."""
    s3 = aws.client("s3")
    for obj in paginate(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=f"{key_prefix}/"):
        if obj["Key"] != f"{key_prefix}/{keep}":
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
            say(f"  removed s3://{bucket}/{obj['Key']} (one weights file per architecture)")


def channel(aws: Aws, name: str, output: str, hyperparameters: dict[str, str]) -> str | None:
    """The s3:// prefix a job with these hyperparameters gets as its `weights` channel: NAME's weights for
    its arch in the bucket of `output`, when it starts from pretrained weights and the file is there."""
    config = TrainConfig.from_dict(hyperparameters)
    if not config.pretrained:
        return None
    bucket = output.removeprefix("s3://").split("/", 1)[0]
    key_prefix = f"{prefix(name, config.arch)}/"
    try:
        listed = aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=key_prefix, MaxKeys=10).get("Contents", [])
    except ClientError as exc:  # the pre-flight checks report the bucket (unless skipped: then the job shall try)
        if error_code(exc) in ("NoSuchBucket", "AccessDenied", "403", "404"):
            return None
        raise
    if not any(o["Key"].endswith(pretrained.SUFFIXES) for o in listed):
        return None
    uri = f"s3://{bucket}/{key_prefix}"
    say(f"pretrained {config.arch} weights: {uri} (the job's '{CHANNEL}' channel)")
    return uri
