"""The AWS subcommands of `byoc`: data, sagemaker-role, train-job, tune, ec2-train, batch-transform, deploy,
rollback, autoscale, predict, models, lambda-deploy, weights, security, monitor schedule, status, stop, teardown.

Each is idempotent (run it again to resume or to converge) and prints what it does.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from byoc.aws import (
    alarms,
    autoscale,
    ecr,
    endpoint,
    interrupt,
    jobs,
    lambda_deploy,
    next_steps,
    preflight,
    rollout,
    s3data,
    sagemaker_role,
    security,
    session,
    status,
    target_models,
    teardown,
    weights,
)
from byoc.core.cli_kit import hidden_alias
from byoc.core.errors import ConfigError
from byoc.training import hp_args

DEFAULT_INSTANCE_TYPE = "ml.m5.large"  # for deploy; --serverless has no instance type
# ResNet-50 on the reference data takes hours on CPUs and minutes on one T4: training defaults to the
# smallest GPU instance SageMaker trains on (byoc.core.gpu_support checks the image supports it).
DEFAULT_TRAIN_INSTANCE_TYPE = "ml.g4dn.xlarge"


def _common(parser: argparse.ArgumentParser, name: bool = True) -> None:
    parser.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION or your profile's)")
    parser.add_argument("--profile", help="AWS profile (default: AWS_PROFILE or the default one)")
    if name:
        parser.add_argument(
            "--name",
            required=True,
            type=_name,
            help="names and tags (byoc:name) everything this creates; status and teardown use it",
        )


def _command(sub, command: str, helptext: str, handler, options=_common) -> argparse.ArgumentParser:
    """A subcommand with `options` (the common ones by default) whose parsed arguments go to
    `handler(aws, args)`, connected and with AWS failures as one-line errors (`_run`)."""
    parser = sub.add_parser(command, help=helptext)
    options(parser)
    parser.set_defaults(func=_run(handler))
    return parser


def _spec(cls, args: argparse.Namespace, **derived):
    """The settings dataclass `cls` from the parsed options of the same names (each option's `dest`
    is its field's name), with `derived` for the fields computed from them."""
    names = {f.name for f in dataclasses.fields(cls)} - set(derived)
    return cls(**{k: v for k, v in vars(args).items() if k in names}, **derived)


def _name(value: str) -> str:
    try:
        return session.validate_name(value)
    except ConfigError as exc:  # argparse reports ArgumentTypeError as a usage error (exit 2)
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--name ")) from exc


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _skip_checks(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-checks",
        action="store_true",
        help="start without the pre-flight checks (bucket and region, data, model, image, --arch, role)",
    )


def _run(handler):
    """Connect, run the handler, and turn AWS failures into one-line errors."""

    def run(args) -> int:
        if not getattr(args, "verbose", False):  # botocore logs every credential lookup at INFO
            for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
                logging.getLogger(noisy).setLevel(logging.WARNING)
        with session.aws_errors(), interrupt.named(getattr(args, "name", None)):
            aws = session.connect(args.region, args.profile)
            return handler(aws, args) or 0

    return run


def register(sub) -> None:
    _register_data(sub)
    _register_jobs(sub)
    _register_ec2(sub)
    _register_hosting(sub)
    _register_transform(sub)
    _register_predict(sub)
    _register_models(sub)
    weights.register(sub)
    security.register(sub, _command)
    for command, helptext, handler in (
        ("status", "what exists for NAME, its state and hourly cost", _status),
        ("stop", "stop NAME's running training, tuning and transform jobs (endpoints keep running)", _stop),
        ("teardown", "delete everything the commands created for NAME", _teardown),
    ):
        p = _command(sub, command, helptext, handler)
        if command == "teardown":
            p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
            p.add_argument("--poll", type=float, default=15, help="seconds between status checks")


def _register_data(sub) -> None:
    p = sub.add_parser("data", help="put training data on S3: a folder of your own, or the dog images")
    data_sub = p.add_subparsers(dest="dataset", metavar="ACTION", required=True)
    u = data_sub.add_parser(
        "upload",
        help="check a folder's layout (train/ valid/ test/ of class folders) and images, then upload what changed",
    )
    _common(u, name=False)
    u.add_argument("folder", type=Path, metavar="DIR", help="folder with train/, valid/ and test/ of class folders")
    u.add_argument("uri", metavar="S3URI", help="s3://BUCKET/PREFIX (the bucket is created in --region if missing)")
    u.add_argument("--workers", type=int, default=16, help="parallel uploads")
    u.set_defaults(func=_run(_data_upload))
    d = data_sub.add_parser("dogimages", help="download the dog images archive and upload it in the dogImages layout")
    _common(d, name=False)
    d.add_argument("--bucket", required=True, help="S3 bucket (created in --region if missing)")
    d.add_argument("--prefix", default="dogImages", help="key prefix")
    d.add_argument("--url", default=s3data.DOG_IMAGES_URL, help="archive URL (http(s):// or file://)")
    d.add_argument(
        "--work-dir",
        type=Path,
        help="where the archive is downloaded and unpacked (default ~/.cache/byoc; reused by a second run)",
    )
    d.add_argument("--workers", type=int, default=16, help="parallel uploads")
    d.set_defaults(func=_run(_dogimages))

    p = _command(
        sub, "sagemaker-role", "the SageMaker execution role for NAME (least privilege on one bucket)", _sagemaker_role
    )
    p.add_argument("--bucket", required=True, help="bucket with the data; outputs go to s3://BUCKET/byoc/NAME/")
    p.add_argument(
        "--data-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="prefix the jobs read (repeatable; default dogImages)",
    )


def _sagemaker_role(aws, args) -> int:
    sagemaker_role.ensure(aws, args.name, args.bucket, args.data_prefix or ["dogImages"])
    return 0


def _data_upload(aws, args) -> int:
    from byoc.aws import data_upload

    data_upload.upload(aws, args.folder, args.uri, args.workers)
    return 0


def _dogimages(aws, args) -> int:
    s3data.dogimages(aws, args.bucket, args.prefix, args.url, args.work_dir, args.workers)
    return 0


def _job_options(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--role", help="SageMaker execution role ARN (default: byoc-NAME-sagemaker from `byoc sagemaker-role`)"
    )
    p.add_argument(
        "--data",
        required=True,
        help="s3:// prefix with train/ valid/ test/ (`byoc data upload` or `byoc data dogimages`)",
    )
    p.add_argument(
        "--output", help="s3:// prefix for model, checkpoints, TensorBoard (default: the data bucket's byoc/NAME)"
    )
    p.add_argument(
        "--image", help="training image URI (default: ACCOUNT.dkr.ecr.REGION.amazonaws.com/byoc-train:latest)"
    )
    p.add_argument(
        "--instance-type",
        default=DEFAULT_TRAIN_INSTANCE_TYPE,
        help="a GPU instance: one T4 trains ResNet-50 in minutes where CPUs take hours (an account may first need "
        "its quota raised: Service Quotas, SageMaker, 'ml.g4dn.xlarge for training job usage'); ml.m5.xlarge "
        "trains on CPUs (the demo data)",
    )
    p.add_argument("--instance-count", type=int, default=1, help="hosts; more than 1 trains with DDP across them")
    volume = p.add_argument("--volume-gb", type=int, default=50, help="GB of disk per host")
    hidden_alias(p, "--volume-size", volume)
    p.add_argument("--max-run", type=int, default=4 * 3600, help="seconds a job may train")
    p.add_argument("--spot", action="store_true", help="managed spot training (checkpoints to S3, resumes)")
    p.add_argument(
        "--max-wait", type=int, default=0, help="spot: seconds including waiting for capacity (default 2 x --max-run)"
    )
    hp_args.add_options(p)
    p.add_argument("--no-wait", dest="wait", action="store_false", help="start and return")
    p.add_argument("--poll", type=float, default=30, help="seconds between status checks")
    _skip_checks(p)


def _job_spec(aws, args, command: str) -> jobs.JobSpec:
    """The job's settings, checked before anything is billed, with the image pinned to its ECR digest."""
    hyperparameters = hp_args.collect(args)  # before any AWS call
    bucket = _data_uri(args.data).removeprefix("s3://").split("/", 1)[0]
    spec = _spec(
        jobs.JobSpec,
        args,
        image=args.image or ecr.image_uri(aws, ecr.TRAIN_REPO),
        role=args.role or sagemaker_role.default_arn(aws, args.name),
        output=args.output or f"s3://{bucket}/{sagemaker_role.output_prefix(args.name)}",
        hyperparameters=hyperparameters,
        security=security.load(aws, args.name, bucket),
    )
    jobs.definition(spec)  # the settings' own checks before those that read the account
    preflight.training(aws, spec, command, args.skip_checks)
    found = weights.channel(aws, args.name, spec.output, hyperparameters)
    return dataclasses.replace(spec, image=ecr.pinned(aws, spec.image), weights=found)


def _data_uri(data: str) -> str:
    """--data as given when it is an s3:// URI; a local folder gets the command that uploads it."""
    if not data.startswith("s3://"):
        raise ConfigError(
            f"--data must be an s3:// URI, got {data!r}; upload a local folder with: "
            f"byoc data upload {data} s3://BUCKET/PREFIX"
        )
    return data


def _register_jobs(sub) -> None:
    p = _command(
        sub,
        "train-job",
        "a SageMaker training job with the byoc-train image; waits and shows logs",
        _train,
        _job_options,
    )
    p.add_argument("--job-name", help="default: NAME-<hash of the settings> (a rerun follows the same job)")
    p.add_argument("--no-logs", dest="logs", action="store_false", help="do not print the CloudWatch log lines")
    p.add_argument(
        "--resume-from",
        dest="resume_job",
        metavar="JOB_NAME",
        help="start from the checkpoints of this earlier training job of NAME (copied to the new job's own)",
    )

    p = _command(
        sub, "tune", "a hyperparameter tuning job (lr, batch-size) maximising val_accuracy", _tune, _job_options
    )
    p.add_argument(
        "--lr-range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=(1e-4, 1e-2),
        help="learning rate range, searched on a log scale",
    )
    p.add_argument("--batch-sizes", default="32,64,128", help="comma-separated batch sizes to try")
    p.add_argument("--max-jobs", type=int, default=8, help="training jobs in total")
    p.add_argument("--max-parallel", type=int, default=2, help="training jobs at a time")
    p.add_argument(
        "--strategy", choices=("Bayesian", "Random", "Hyperband"), default="Bayesian", help="how the tuner picks jobs"
    )
    p.add_argument("--max-tuning-time", type=int, default=0, help="seconds for the whole tuning job (0: no limit)")
    p.add_argument("--tuning-name", help="default: NAME-<hash> (32 characters at most)")


def _register_ec2(sub) -> None:
    p = _command(
        sub,
        "ec2-train",
        "the training image on one EC2 instance (GPU AMI, least-privilege role, no inbound rules); follows it",
        _ec2_train,
    )
    p.add_argument("--data", required=True, help="s3://BUCKET/PREFIX with train/ valid/ test/ (from `byoc data`)")
    p.add_argument("--instance-type", default="g4dn.xlarge", help="EC2 GPU type, e.g. g4dn.xlarge, g5.xlarge")
    p.add_argument("--spot", action="store_true", help="one-time spot; after an interruption it relaunches and resumes")
    p.add_argument(
        "--image", help="training image URI (default: ACCOUNT.dkr.ecr.REGION.amazonaws.com/byoc-train:latest)"
    )
    p.add_argument(
        "--key-name", help="EC2 key pair (the security group keeps no inbound rules: a rerun removes any added by hand)"
    )
    p.add_argument("--subnet", help="subnet ID with a route to S3, ECR and CloudWatch (default: the default VPC's)")
    p.add_argument("--volume-gb", type=int, default=100, help="root volume, gp3 (AMI, image, data, checkpoints)")
    p.add_argument("--ami", help="AMI ID (default: the current Deep Learning Base GPU AMI, from its SSM parameter)")
    p.add_argument("--max-run", type=int, default=4 * 3600, help="seconds training may run before it is stopped")
    hp_args.add_options(p)
    no_wait = p.add_argument("--no-wait", dest="follow", action="store_false", help="return once launched")
    hidden_alias(p, "--no-follow", no_wait)
    p.add_argument("--poll", type=float, default=30, help="seconds between status checks")
    _skip_checks(p)


def _ec2_train(aws, args) -> int:
    from byoc.aws import ec2_train

    hyperparameters = hp_args.collect(args)  # before any AWS call
    _data_uri(args.data)
    spec = _spec(
        ec2_train.Ec2Spec,
        args,
        image=args.image or ecr.image_uri(aws, ecr.TRAIN_REPO),
        hyperparameters=hyperparameters,
        security=security.load(aws, args.name, _data_uri(args.data).removeprefix("s3://").split("/", 1)[0]),
    )
    spec.check()  # the settings' own checks before those that read the account
    preflight.ec2(aws, spec, args.skip_checks)
    # by digest, as SageMaker jobs are: a new push under the same tag is a new job, never the old image
    spec = dataclasses.replace(spec, image=ecr.pinned(aws, spec.image))
    ec2_train.ec2_train(aws, spec, args.follow, args.poll)
    return 0


def _train(aws, args) -> int:
    spec = _job_spec(aws, args, "train-job")
    if args.resume_job:
        spec.resume_from = jobs.resume_source(aws, args.name, args.resume_job)
    job = jobs.train(aws, spec, args.job_name, args.wait, args.poll, args.logs)
    next_steps.after_training(args.name, job)
    return 0


def _tune(aws, args) -> int:
    try:
        sizes = tuple(int(s) for s in args.batch_sizes.split(",") if s.strip())
    except ValueError as exc:
        raise ConfigError(f"--batch-sizes {args.batch_sizes!r}: expected integers like 32,64,128") from exc
    tuning = jobs.TuningSpec(
        lr_min=args.lr_range[0],
        lr_max=args.lr_range[1],
        batch_sizes=sizes,
        max_jobs=args.max_jobs,
        max_parallel=args.max_parallel,
        strategy=args.strategy,
        max_seconds=args.max_tuning_time,
    )
    job = jobs.tune(aws, _job_spec(aws, args, "tune"), tuning, args.tuning_name, args.wait, args.poll)
    next_steps.after_tuning(aws, args.name, job)
    return 0


def _register_hosting(sub) -> None:
    _register_deploy(sub)
    _register_autoscale(sub)
    _register_lambda(sub)


def _register_deploy(sub) -> None:
    p = _command(sub, "deploy", "model + endpoint config + endpoint NAME (created, or updated in place)", _deploy)
    p.add_argument(
        "--model-data", help="s3:// URI of model.tar.gz (a training job's artifacts); required unless --multi-model"
    )
    p.add_argument(
        "--role", help="SageMaker execution role ARN (default: byoc-NAME-sagemaker from `byoc sagemaker-role`)"
    )
    p.add_argument(
        "--image",
        help="serving image URI (default: ACCOUNT.dkr.ecr.REGION.amazonaws.com/byoc-serve:latest; with --serverless "
        f"or --multi-model {endpoint.SERVE_CPU_REPO}:latest, the CPU image)",
    )
    p.add_argument("--instance-type", help=f"default {DEFAULT_INSTANCE_TYPE} (not with --serverless)")
    p.add_argument("--instance-count", type=int, help="default 1 (not with --serverless)")
    p.add_argument(
        "--startup-timeout",
        type=int,
        default=600,
        help="ContainerStartupHealthCheckTimeoutInSeconds: time to pass /ping after start",
    )
    p.add_argument("--env", action="append", metavar="NAME=VALUE", help="container environment (repeatable)")
    p.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="an asynchronous endpoint: requests queued, inputs and results on S3, payloads up to 1 GB, up to 1 h "
        "each; can scale to zero (`byoc autoscale --min 0`)",
    )
    output = p.add_argument(
        "--async-output", dest="output", help="--async: s3:// prefix for results (required with --async)"
    )
    hidden_alias(p, "--output", output)
    error_output = p.add_argument(
        "--async-error-output",
        dest="error_output",
        help="--async: s3:// prefix for failures (default: SageMaker's, with results)",
    )
    hidden_alias(p, "--error-output", error_output)
    p.add_argument("--sns-success", dest="success_topic", metavar="ARN", help="--async: SNS topic told of results")
    p.add_argument("--sns-error", dest="error_topic", metavar="ARN", help="--async: SNS topic told of failures")
    p.add_argument(
        "--max-concurrent-per-instance",
        dest="max_concurrent",
        type=int,
        metavar="N",
        help="--async: requests one instance works on at once (default: SageMaker's choice)",
    )
    _deploy_kind_options(p)
    _capture_options(p)
    _rollout_options(p)
    _alarm_options(p, latency=True)
    p.add_argument("--no-wait", dest="wait", action="store_false", help="start and return")
    p.add_argument("--poll", type=float, default=30, help="seconds between status checks")
    _skip_checks(p)

    p = _command(sub, "rollback", "put endpoint NAME's previous config back (a guarded update)", _rollback)
    _rollout_options(p)
    p.add_argument("--no-wait", dest="wait", action="store_false", help="start and return")
    p.add_argument("--poll", type=float, default=30, help="seconds between status checks")


def _register_autoscale(sub) -> None:
    p = _command(sub, "autoscale", "target-tracking auto-scaling of endpoint NAME", _autoscale)
    p.add_argument("--min", type=int, default=1, help="fewest instances (0: asynchronous endpoints only)")
    p.add_argument("--max", type=int, default=2, help="most instances")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-invocations", type=float, help="invocations per instance per minute to aim for")
    target.add_argument("--max-rps", type=float, help="one instance's measured max requests/s; target = x 0.5 x 60")
    target.add_argument(
        "--target-backlog",
        type=float,
        help=f"asynchronous endpoints: queued requests per instance to aim for (default "
        f"{autoscale.DEFAULT_TARGET_BACKLOG:g})",
    )
    p.add_argument("--scale-in-cooldown", type=int, default=300, help="seconds")
    p.add_argument("--scale-out-cooldown", type=int, default=60, help="seconds")


def _register_lambda(sub) -> None:
    p = _command(
        sub, "lambda-deploy", "the Lambda function for endpoint NAME, least-privilege, with concurrency", _lambda_deploy
    )
    p.add_argument("--function", required=True, help="Lambda function name")
    p.add_argument(
        "--source",
        type=Path,
        help="folder with lambda_function.py (default: the function byoc carries, found from any directory)",
    )
    p.add_argument(
        "--reserved-concurrency",
        dest="reserved",
        type=int,
        metavar="N",
        help="executions kept for this function, and its ceiling (checked against the account's quota: Lambda keeps "
        "100 unreserved); without it the function shares the unreserved pool and a reservation made earlier is removed",
    )
    p.add_argument(
        "--provisioned-concurrency",
        dest="provisioned",
        type=int,
        help="on alias live (0 removes it; billed while allocated)",
    )
    p.add_argument("--function-url", action="store_true", help="a Function URL on alias live")
    p.add_argument(
        "--function-url-auth",
        dest="url_auth",
        default="AWS_IAM",
        choices=("AWS_IAM", "NONE"),
        help="who may call the Function URL: signed IAM requests, or anyone",
    )
    memory = p.add_argument("--function-memory", dest="memory", type=int, default=512, help="the function's MB")
    hidden_alias(p, "--memory", memory)
    p.add_argument("--timeout", type=int, default=30, help="seconds the function may run per request")
    p.add_argument("--log-retention-days", type=int, default=30, help="days the function's CloudWatch logs are kept")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", help="more environment (repeatable)")
    p.add_argument(
        "--s3-read-bucket",
        dest="read_buckets",
        action="append",
        default=[],
        metavar="BUCKET",
        help="let requests name images in this bucket (s3:GetObject on it only; repeatable)",
    )
    p.add_argument("--poll", type=float, default=5, help="seconds between status checks")
    _skip_checks(p)
    _alarm_options(p)


def _rollout_options(p: argparse.ArgumentParser) -> None:
    """How an update of an existing endpoint shifts traffic, and which alarms roll it back."""
    p.add_argument(
        "--rollout",
        metavar="MODE",
        help="how an update of an existing endpoint takes over: canary:PCT:SECONDS (default canary:10:300, then "
        "all), linear:PCT:SECONDS, rolling:PCT:SECONDS (batches of instances; 2 or more instances) or "
        "all-at-once[:SECONDS] (then SECONDS of baking); SageMaker rolls it back when an alarm fires",
    )
    p.add_argument(
        "--rollout-alarms",
        type=lambda text: [a for a in text.split(",") if a],
        metavar="NAME,...",
        help="CloudWatch alarms that roll an update back (default: the endpoint's byoc-NAME-* alarms)",
    )


def _alarm_options(p: argparse.ArgumentParser, latency: bool = False) -> None:
    """The CloudWatch alarms' threshold and whom they notify."""
    if latency:
        p.add_argument(
            "--latency-alarm-ms",
            type=float,
            default=alarms.DEFAULT_LATENCY_MS,
            help=f"alarm when the p99 ModelLatency is over this (default {alarms.DEFAULT_LATENCY_MS:g} ms)",
        )
    notify = p.add_mutually_exclusive_group()
    notify.add_argument(
        "--alarm-topic",
        type=_checked(alarms.check_topic),
        metavar="SNS_ARN",
        help="SNS topic the CloudWatch alarms notify",
    )
    notify.add_argument(
        "--alarm-email",
        type=_checked(alarms.check_email),
        metavar="ADDRESS",
        help="create SNS topic byoc-NAME-alarms for the alarms, subscribe ADDRESS",
    )


def _checked(check):
    """An argparse type from a check that raises ConfigError (a usage error, exit 2, before any call)."""

    def parse(value: str) -> str:
        try:
            return check(value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _notify(args: argparse.Namespace) -> alarms.Notify:
    return alarms.Notify(
        getattr(args, "latency_alarm_ms", alarms.DEFAULT_LATENCY_MS), args.alarm_topic, args.alarm_email
    )


def _rollout(args: argparse.Namespace) -> rollout.Options:
    return rollout.Options(args.rollout, args.rollout_alarms)


def _rollback(aws, args) -> int:
    rollout.rollback(aws, args.name, _rollout(args), args.poll, args.wait)
    return 0


def _deploy(aws, args) -> int:
    async_flags = {
        "output": "--async-output",
        "error_output": "--async-error-output",
        "success_topic": "--sns-success",
        "error_topic": "--sns-error",
        "max_concurrent": "--max-concurrent-per-instance",
    }
    if args.asynchronous and args.output is None:
        raise ConfigError("--async needs --async-output s3://BUCKET/PREFIX: where SageMaker writes the results")
    given = [flag for dest, flag in async_flags.items() if getattr(args, dest) is not None]
    if given and not args.asynchronous:
        raise ConfigError(f"{', '.join(given)}: only for asynchronous endpoints; add --async")
    _check_kind_flags(args)
    spec = _spec(
        endpoint.DeploySpec,
        args,
        # Serverless and multi-model endpoints run on CPUs only: the CPU image, a fifth the size.
        image=args.image
        or ecr.image_uri(
            aws, endpoint.SERVE_CPU_REPO if args.serverless or args.multi_model is not None else ecr.SERVE_REPO
        ),
        role=args.role or sagemaker_role.default_arn(aws, args.name),
        environment=_pairs(args.env, "--env"),
        asynchronous=_spec(endpoint.AsyncSpec, args) if args.asynchronous else None,
        model_data=args.multi_model or args.model_data,
        multi_model=args.multi_model is not None,
        serverless=_spec(endpoint.ServerlessSpec, args) if args.serverless else None,
        instance_type=args.instance_type or DEFAULT_INSTANCE_TYPE,
        instance_count=1 if args.instance_count is None else args.instance_count,
        capture=_capture(args),
        keep_capture=not args.no_capture,
        security=security.load(aws, args.name),
    )
    endpoint.model_request(spec)  # the settings' own checks before those that read the account
    preflight.deploy(aws, spec, args.skip_checks)
    spec = dataclasses.replace(spec, image=ecr.pinned(aws, spec.image))
    endpoint.deploy(aws, spec, args.wait, args.poll, _rollout(args), _notify(args))
    next_steps.after_deploy(spec)
    return 0


def _autoscale(aws, args) -> int:
    _refuse_serverless_scaling(aws, args.name)
    if args.max_rps is not None:
        target = autoscale.target_from_max_rps(args.max_rps)
        session.say(
            f"target from --max-rps {args.max_rps:g}: {args.max_rps:g} x {autoscale.SAFETY_FACTOR} x 60 = "
            f"{target:g} invocations per instance per minute"
        )
    else:
        target = args.target_invocations
    autoscale.autoscale(
        aws,
        args.name,
        args.min,
        args.max,
        target,
        args.scale_in_cooldown,
        args.scale_out_cooldown,
        target_backlog=args.target_backlog,
    )
    return 0


def _lambda_deploy(aws, args) -> int:
    spec = _spec(
        lambda_deploy.LambdaSpec,
        args,
        source=args.source or lambda_deploy.default_source(),
        environment=_pairs(args.env, "--env"),
        security=security.load(aws, args.name),
    )
    lambda_deploy.validate(spec)  # the settings' own checks before those that read the account
    lambda_deploy.package(spec.source)
    preflight.lambda_endpoint(aws, spec.name, args.skip_checks)
    result = lambda_deploy.deploy(aws, spec, args.poll)
    next_steps.after_lambda(spec.function, lambda_deploy.ALIAS, result["url"], spec.url_auth, aws.region)
    return 0


def _status(aws, args) -> int:
    status.status(aws, args.name)
    return 0


def _stop(aws, args) -> int:
    from byoc.aws import stop

    stop.stop(aws, args.name)
    return 0


def _teardown(aws, args) -> int:
    teardown.teardown(aws, args.name, args.dry_run, args.poll)
    return 0


def _register_transform(sub) -> None:
    from byoc.local import batch_transform as bt

    p = sub.add_parser(
        "batch-transform",
        help="a SageMaker batch transform job over an S3 prefix, or (--local) its protocol against a container here",
    )
    _common(p, name=False)
    p.add_argument("--name", type=_name, help="names and tags (byoc:name) the model and job (not with --local)")
    p.add_argument(
        "--local",
        nargs=2,
        type=Path,
        metavar=("INPUT_DIR", "OUTPUT_DIR"),
        help="run SageMaker's batch protocol here against --container; outputs as <relative path>.out",
    )
    p.add_argument("--container", help="--local: the running serving container, http://HOST:PORT")
    p.add_argument("--model-data", help="s3:// URI of model.tar.gz (a training job's artifacts)")
    p.add_argument("--input", help="s3:// prefix: every object under it is transformed")
    p.add_argument("--output", help="s3:// prefix for the <key>.out results")
    p.add_argument(
        "--content-type",
        choices=bt.CONTENT_TYPES,
        help=f"of every input (default: {bt.X_IMAGE} on SageMaker; with --local, from each file's extension); "
        f"{bt.JSONLINES} is split into lines and batched",
    )
    p.add_argument("--instance-type", default="ml.m5.large", help="the transform job's instances")
    p.add_argument("--instance-count", type=int, default=1, help="instances sharing the input")
    p.add_argument("--max-payload-mb", type=int, help="MaxPayloadInMB, 1-100 (default: the container's)")
    p.add_argument("--concurrency", type=int, help="MaxConcurrentTransforms per instance (default: the container's)")
    p.add_argument(
        "--batch-strategy",
        choices=("MultiRecord", "SingleRecord"),
        help="default: MultiRecord for JSON Lines and SingleRecord otherwise (with --local: the container's)",
    )
    p.add_argument("--invocations-timeout", type=int, default=600, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=3, help="retries of a request that got a 5xx or no answer")
    p.add_argument(
        "--image", help="serving image URI (default: ACCOUNT.dkr.ecr.REGION.amazonaws.com/byoc-serve:latest)"
    )
    p.add_argument(
        "--role", help="SageMaker execution role ARN (default: byoc-NAME-sagemaker from `byoc sagemaker-role`)"
    )
    p.add_argument("--job-name", help="default: NAME-t-<hash of the settings> (a rerun follows the same job)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="start and return")
    p.add_argument("--poll", type=float, default=30, help="seconds between status checks")
    _skip_checks(p)
    p.set_defaults(func=_batch_transform)


def _batch_transform(args) -> int:
    """--local: the protocol against a container on this machine (no AWS call); else a SageMaker job."""
    from byoc.aws import transform_job
    from byoc.local import batch_transform as bt

    strategy = bt.Strategy.parse(args.batch_strategy) if args.batch_strategy else None
    if args.local:
        s3_flags = (("--model-data", args.model_data), ("--input", args.input), ("--output", args.output))
        given = [flag for flag, value in s3_flags if value]
        if given:
            raise ConfigError(
                f"{', '.join(given)}: only for a SageMaker job (--local reads INPUT_DIR and writes OUTPUT_DIR)"
            )
        if not args.container:
            raise ConfigError("--local needs --container http://HOST:PORT (a running serving container)")
        settings = bt.Settings(
            container=args.container,
            content_type=args.content_type,
            max_payload_mb=args.max_payload_mb,
            concurrency=args.concurrency,
            strategy=strategy,
            timeout=args.invocations_timeout,
            max_retries=args.max_retries,
        )
        bt.run(args.local[0], args.local[1], settings, say=session.say)
        return 0
    needed = (
        ("--name", args.name),
        ("--model-data", args.model_data),
        ("--input", args.input),
        ("--output", args.output),
    )
    missing = [flag for flag, value in needed if not value]
    if missing:
        raise ConfigError(
            f"batch-transform needs {', '.join(missing)} (or --local INPUT_DIR OUTPUT_DIR --container URL)"
        )
    if args.container:
        raise ConfigError("--container goes with --local (a SageMaker job runs its own container)")

    def start(aws, args) -> int:
        spec = _spec(
            transform_job.TransformSpec,
            args,
            image=args.image or ecr.image_uri(aws, ecr.SERVE_REPO),
            role=args.role or sagemaker_role.default_arn(aws, args.name),
            content_type=args.content_type or bt.X_IMAGE,
            batch_strategy=strategy,
            security=security.load(aws, args.name),
        )
        transform_job.transform_request(spec, "model")  # the settings' own checks first
        preflight.transform(aws, spec, args.skip_checks)
        spec = dataclasses.replace(spec, image=ecr.pinned(aws, spec.image))
        transform_job.transform(aws, spec, args.job_name, args.wait, args.poll)
        return 0

    return _run(start)(args)


def _register_predict(sub) -> None:
    p = _command(
        sub,
        "predict",
        "classify image files with an endpoint (InvokeEndpoint, or --async through S3) and print the top classes",
        _predict,
        lambda parser: _common(parser, name=False),
    )
    # required, but checked by _endpoint_given: argparse would not count the hidden alias as giving it
    endpoint_name = p.add_argument(
        "--name", dest="endpoint", help="required: the endpoint's name (`byoc deploy --name`)"
    )
    hidden_alias(p, "--endpoint", endpoint_name)
    p.set_defaults(func=_endpoint_given(_run(_predict)))
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (.jpg, .png, ...)")
    p.add_argument("--top-k", type=int, default=3, help="classes per image")
    p.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per image")
    p.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="an asynchronous endpoint: upload each image, InvokeEndpointAsync, wait for its result on S3",
    )
    p.add_argument(
        "--async-input",
        metavar="S3URI",
        help="--async: s3:// prefix the images go to (default: s3://BUCKET/byoc/NAME/async-input/, BUCKET being "
        "where the endpoint writes its results)",
    )
    p.add_argument(
        "--wait-timeout", type=float, default=3600, help="--async: seconds to wait for all results (default 3600)"
    )
    p.add_argument(
        "--invocation-timeout",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="--async: seconds the endpoint may work on one image, 1 to 3600 (default 3600)",
    )
    p.add_argument(
        "--target-model",
        metavar="KEY",
        help="a multi-model endpoint's model: its key under the endpoint's prefix, e.g. dogs-v2.tar.gz "
        "(`byoc models list`); not with --async",
    )


def _endpoint_given(run):
    """`run` once --name (or its alias) is given, checked before connecting to AWS."""

    def checked(args) -> int:
        if not args.endpoint:
            raise ConfigError("predict needs --name ENDPOINT (the endpoint's name)")
        return run(args)

    return checked


def _predict(aws, args) -> int:
    from byoc.aws import predict

    return predict.predict(aws, _spec(predict.PredictSpec, args))


def _deploy_kind_options(p: argparse.ArgumentParser) -> None:
    """deploy's multi-model and serverless options."""
    p.add_argument(
        "--multi-model",
        metavar="S3PREFIX",
        help="a multi-model endpoint serving every model.tar.gz under s3://BUCKET/PREFIX/ (`byoc models add`), "
        "picked per request by `byoc predict --target-model`; CPU instances only; instead of --model-data",
    )
    p.add_argument(
        "--serverless",
        action="store_true",
        help="a serverless endpoint: no instances, billed per request, cold starts after idle; payloads up to 4 MB, "
        "60 s each; image up to 10 GB (the CPU image by default)",
    )
    memory = p.add_argument(
        "--serverless-memory",
        dest="memory",
        type=int,
        choices=endpoint.SERVERLESS_MEMORY_MB,
        metavar="MB",
        help=f"--serverless: MB per copy of the container, one of {', '.join(map(str, endpoint.SERVERLESS_MEMORY_MB))} "
        "(more memory also gives more vCPUs)",
    )
    hidden_alias(p, "--memory", memory)
    p.add_argument(
        "--max-concurrency",
        type=int,
        metavar="N",
        help=f"--serverless: concurrent requests, 1 to {endpoint.SERVERLESS_MAX_CONCURRENCY}",
    )
    p.add_argument(
        "--provisioned-concurrency",
        type=int,
        metavar="N",
        help="--serverless: copies kept warm (no cold start), 1 to --max-concurrency; billed by the hour",
    )


def _capture_options(p: argparse.ArgumentParser) -> None:
    """deploy's data capture: what `byoc monitor schedule` reads."""
    p.add_argument(
        "--capture",
        type=int,
        metavar="PCT",
        help="data capture: SageMaker writes PCT %% (0 to 100) of the requests and their answers to S3, "
        "images base64, answers as JSON (what `byoc monitor schedule` reads); not with --serverless. "
        "An update without it keeps the endpoint's capture",
    )
    p.add_argument(
        "--capture-output",
        metavar="S3URI",
        help="--capture: where (default s3://BUCKET/byoc/NAME/capture, BUCKET the model's); SageMaker adds "
        "ENDPOINT/VARIANT/yyyy/mm/dd/hh/",
    )
    p.add_argument("--no-capture", action="store_true", help="stop the endpoint's data capture")


def _capture(args: argparse.Namespace) -> endpoint.CaptureSpec | None:
    """The CaptureSpec of --capture/--capture-output, checked before any AWS call."""
    if args.capture is None:
        if args.capture_output is not None:
            raise ConfigError("--capture-output: only with --capture PCT")
        return None
    if args.no_capture:
        raise ConfigError("--capture and --no-capture: pick one")
    if args.serverless:
        # the feature exclusions of https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html
        raise ConfigError("--capture: SageMaker does not capture data on serverless endpoints; deploy on instances")
    model_data = args.multi_model or args.model_data or ""
    return endpoint.CaptureSpec(
        args.capture, args.capture_output or endpoint.default_capture_uri(model_data, args.name)
    )


def _check_kind_flags(args: argparse.Namespace) -> None:
    """The flags each kind of endpoint takes, checked before any AWS call."""
    if args.multi_model is not None and args.model_data is not None:
        raise ConfigError("--model-data and --multi-model: pick one (--multi-model serves every model under a prefix)")
    if args.multi_model is None and args.model_data is None:
        raise ConfigError("deploy needs --model-data s3://.../model.tar.gz (or --multi-model s3://BUCKET/PREFIX/)")
    serverless_flags = {
        "memory": "--serverless-memory",
        "max_concurrency": "--max-concurrency",
        "provisioned_concurrency": "--provisioned-concurrency",
    }
    given = [flag for dest, flag in serverless_flags.items() if getattr(args, dest) is not None]
    if given and not args.serverless:
        raise ConfigError(f"{', '.join(given)}: only for serverless endpoints; add --serverless")
    if not args.serverless:
        return
    if args.memory is None or args.max_concurrency is None:
        raise ConfigError("--serverless needs --serverless-memory MB and --max-concurrency N")
    others = {
        "--async": args.asynchronous,
        "--multi-model": args.multi_model is not None,
        "--instance-type": args.instance_type is not None,
        "--instance-count": args.instance_count is not None,
    }
    refused = [flag for flag, on in others.items() if on]
    if refused:
        raise ConfigError(
            f"--serverless and {', '.join(refused)}: a serverless endpoint has no instances and serves one "
            "model in real time"
        )


def _refuse_serverless_scaling(aws, name: str) -> None:
    """Serverless endpoints scale themselves up to their MaxConcurrency; there is no instance count to scale."""
    sm = aws.client("sagemaker")
    described = session.find(sm.describe_endpoint, EndpointName=name)
    config = described and session.find(sm.describe_endpoint_config, EndpointConfigName=described["EndpointConfigName"])
    if endpoint.is_serverless(config):
        raise ConfigError(
            f"endpoint {name} is serverless: SageMaker scales it by itself up to its --max-concurrency; to change "
            f"that, run `byoc deploy --name {name} --serverless` with other --serverless-memory/--max-concurrency"
        )


def _register_models(sub) -> None:
    p = sub.add_parser("models", help="the models of a multi-model endpoint (model.tar.gz files under its S3 prefix)")
    models_sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = _command(
        models_sub,
        "add",
        "copy a model.tar.gz (a local file, or s3:// server-side) under the prefix as KEY.tar.gz",
        _models_add,
        _models_options,
    )
    p.add_argument("key", metavar="KEY", help="the model's name: stored as KEY.tar.gz, its TargetModel")
    p.add_argument("artifact", metavar="MODEL_TAR", help="a local model.tar.gz or an s3:// URI of one")
    _command(
        models_sub, "list", "the models under the prefix, with size and last-modified", _models_list, _models_options
    )


def _models_options(p: argparse.ArgumentParser) -> None:
    _common(p, name=False)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--name", type=_name, help="the multi-model endpoint: its models' prefix is used")
    where.add_argument("--prefix", help="s3://BUCKET/PREFIX/ the models are under (no endpoint needed)")


def _models_add(aws, args) -> int:
    prefix = args.prefix or target_models.endpoint_prefix(aws, args.name)
    target_models.add(aws, prefix, args.key, args.artifact, args.name or "ENDPOINT")
    return 0


def _models_list(aws, args) -> int:
    prefix = args.prefix or target_models.endpoint_prefix(aws, args.name)
    target_models.show(prefix, target_models.list_models(aws, prefix))
    return 0
