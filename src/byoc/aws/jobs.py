"""Training and hyperparameter tuning jobs with our training image."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from byoc.aws import metrics, preflight, validator, waiting
from byoc.aws.logtail import LogTail
from byoc.aws.security import Profile, apply_training
from byoc.aws.session import Aws, AwsError, digest, find, owned, say, tags_list
from byoc.core import gpu_support
from byoc.core.errors import ConfigError
from byoc.training.contract import DEFAULT_CHECKPOINT_DIR, TrainConfig

TENSORBOARD_LOCAL = "/opt/ml/output/tensorboard"  # where byoc.training.train writes TensorBoard events
TUNED = ("lr", "batch-size")  # ranged by tuning, so not static hyperparameters there


@dataclass
class JobSpec:
    """What a training job (or each job of a tuning job) runs on."""

    name: str
    image: str
    role: str
    data: str  # s3:// prefix with train/ valid/ test/ (the dogImages layout)
    output: str  # s3:// prefix for model artifacts, checkpoints and TensorBoard
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_gb: int = 50
    max_run: int = 4 * 3600
    spot: bool = False
    max_wait: int = 0  # spot only; 0: twice max_run
    hyperparameters: dict[str, str] = field(default_factory=dict)
    resume_from: str | None = None  # s3:// checkpoint prefix of an earlier job to start from (resume_source)
    weights: str | None = None  # s3:// prefix of the pretrained weights file, the `weights` channel (byoc.aws.weights)
    security: Profile | None = None  # NAME's security profile (byoc.aws.security), applied to every job


def hyperparameters(values: dict[str, object]) -> dict[str, str]:
    """Hyperparameters as SageMaker wants them (strings), checked by the training image's own rules."""
    given = {k: _text(v) for k, v in values.items() if v is not None}
    TrainConfig.from_dict(given)  # unknown names and bad values fail here, not 10 minutes into a job
    return given


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _s3(uri: str, what: str) -> str:
    if not uri.startswith("s3://") or len(uri) < 6:
        raise ConfigError(f"{what} must be an s3:// URI, got {uri!r}")
    return uri.rstrip("/")


def definition(spec: JobSpec) -> dict:
    """The parts a training job and a tuning job's training definition share."""
    if spec.instance_count < 1:
        raise ConfigError("--instance-count must be >= 1")
    found = gpu_support.capability_problem(spec.instance_type)
    if found:
        raise validator.RequestRefused(found)
    output = _s3(spec.output, "--output")
    stopping = {"MaxRuntimeInSeconds": spec.max_run}
    request: dict[str, Any] = {
        "AlgorithmSpecification": {
            "TrainingImage": spec.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": metrics.METRIC_DEFINITIONS,
        },
        "RoleArn": spec.role,
        "InputDataConfig": [
            {
                "ChannelName": "training",
                # every host gets all the data; DistributedSampler splits it between processes
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": _s3(spec.data, "--data") + "/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"{output}/model"},
        "ResourceConfig": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
            "VolumeSizeInGB": spec.volume_gb,
        },
        "StoppingCondition": stopping,
    }
    if spec.weights:
        request["InputDataConfig"].append(weights_channel(spec.weights))
    if spec.spot:
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait or 2 * spec.max_run
        if stopping["MaxWaitTimeInSeconds"] < spec.max_run:
            raise ConfigError("--max-wait must be >= --max-run (it includes the time waiting for spot capacity)")
        request["EnableManagedSpotTraining"] = True
    return apply_training(request, spec.security)


def weights_channel(uri: str) -> dict:
    """The `weights` channel: the pretrained weights file, copied to /opt/ml/input/data/weights before the
    job starts (File mode), so the training image never downloads them (byoc.training.model)."""
    return {
        "ChannelName": "weights",
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": _s3(uri, "the weights channel") + "/",
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }


def checkpoint_uri(output: str, job_name: str) -> str:
    """The S3 prefix of one training job's checkpoints. SageMaker restores everything under a job's
    CheckpointConfig.S3Uri into LocalPath when the job starts ("run a new estimator with the same
    checkpoint_s3_uri" resumes: https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints-resume.html),
    so a prefix shared by two jobs makes the second resume the first's weights and epoch: one job, one prefix."""
    return f"{_s3(output, '--output')}/checkpoints/{job_name}/"


def training_request(spec: JobSpec, job_name: str | None = None) -> dict:
    """The CreateTrainingJob request; the default job name is a hash of it, so a rerun finds the same job."""
    request = definition(spec)
    request["HyperParameters"] = dict(spec.hyperparameters)
    request["TensorBoardOutputConfig"] = {
        "S3OutputPath": f"{_s3(spec.output, '--output')}/tensorboard",
        "LocalPath": TENSORBOARD_LOCAL,
    }
    request["Tags"] = tags_list(spec.name)
    settings = {**request, "ResumeFrom": spec.resume_from} if spec.resume_from else request
    name = job_name or f"{spec.name}-{digest(settings)}"
    request["TrainingJobName"] = name
    if spec.spot or spec.resume_from:
        # A reclaimed spot instance resumes from here: byoc.training.train keeps its checkpoints in LocalPath.
        request["CheckpointConfig"] = {"S3Uri": checkpoint_uri(spec.output, name), "LocalPath": DEFAULT_CHECKPOINT_DIR}
    return request


def train(
    aws: Aws, spec: JobSpec, job_name: str | None = None, wait: bool = True, poll: float = 30, logs: bool = True
) -> dict:
    """Start the training job (or find the one these settings already started), follow it, report metrics."""
    sm = aws.client("sagemaker")
    request = training_request(spec, job_name)
    preflight.isolation_weights("CreateTrainingJob", request)
    validator.check(sm, "CreateTrainingJob", request)  # refused before it is announced or started
    name = request["TrainingJobName"]
    hps = " ".join(f"{k}={v}" for k, v in sorted(spec.hyperparameters.items()))
    announce = [
        f"starting training job {name}: {spec.instance_count} x {spec.instance_type}"
        f"{' (managed spot)' if spec.spot else ''}, image {spec.image}, data {spec.data}",
        f"  hyperparameters: {hps or '(defaults)'}",
    ]
    if spec.resume_from:
        announce.append(f"  resuming from the checkpoints of {spec.resume_from}")
    _start_or_follow(
        sm.describe_training_job,
        functools.partial(_create_training_job, aws, spec),
        "TrainingJobName",
        "TrainingJobStatus",
        request,
        "training job",
        announce,
    )
    if not wait:
        return sm.describe_training_job(TrainingJobName=name)
    tail = LogTail(aws.client("logs"), name, echo=logs)
    say(f"waiting for {name} (logs: CloudWatch {tail.group}, streams {name}/*)")
    waiting.wait(
        sm,
        "training_job_completed_or_stopped",
        lambda r: f"{r.get('TrainingJobStatus', '?')} / {r.get('SecondaryStatus', '?')}",
        f"training job {name}",
        poll=poll,
        timeout=spec.max_run + (spec.max_wait or spec.max_run) + 3600,
        on_poll=tail.poll,
        stops_with=waiting.STOP,
        TrainingJobName=name,
    )
    job = sm.describe_training_job(TrainingJobName=name)
    # SageMaker's final values win; the log lines fill in what it has not scraped (yet).
    final = {**tail.metrics, **{m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}}
    report_job(job, final)
    return job


def _create_training_job(aws: Aws, spec: JobSpec, **request: Any) -> None:
    """CreateTrainingJob, after copying the checkpoints of the job it resumes (if any) to its own prefix:
    the earlier job's checkpoints stay as that job left them."""
    if spec.resume_from:
        copy_checkpoints(aws.client("s3"), spec.resume_from, request["CheckpointConfig"]["S3Uri"])
    aws.client("sagemaker").create_training_job(**request)


def resume_source(aws: Aws, name: str, job_name: str) -> str:
    """The checkpoint prefix of training job `job_name`, checked: it exists, byoc started it for NAME,
    and it has checkpoints (a one-line error otherwise, before anything is created)."""
    sm = aws.client("sagemaker")
    job = find(sm.describe_training_job, TrainingJobName=job_name)
    if job is None:
        raise ConfigError(f"--resume-from {job_name}: no such training job in {aws.region}")
    tags = sm.list_tags(ResourceArn=job["TrainingJobArn"]).get("Tags", [])
    if not owned(tags, name):
        raise ConfigError(f"--resume-from {job_name}: that training job was not started by byoc for {name!r}")
    uri = job.get("CheckpointConfig", {}).get("S3Uri")
    if not uri:
        raise ConfigError(f"--resume-from {job_name}: that job kept no checkpoints (it ran without --spot)")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"):
        raise ConfigError(f"--resume-from {job_name}: no checkpoints under {uri}")
    return uri


def copy_checkpoints(s3, source: str, target: str) -> None:
    """Every object under the s3:// prefix `source`, copied under `target` (server-side)."""
    src_bucket, _, src_prefix = source.removeprefix("s3://").partition("/")
    dst_bucket, _, dst_prefix = target.removeprefix("s3://").partition("/")
    src_prefix, dst_prefix = src_prefix.rstrip("/") + "/", dst_prefix.rstrip("/") + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=src_bucket, Prefix=src_prefix):
        for obj in page.get("Contents", []):
            key = dst_prefix + obj["Key"].removeprefix(src_prefix)
            s3.copy({"Bucket": src_bucket, "Key": obj["Key"]}, dst_bucket, key)
    say(f"  copied the checkpoints of {source} to {target}")


def _start_or_follow(
    describe, create, name_key: str, status_key: str, request: dict, kind: str, announce: list[str]
) -> None:
    """Create the job, unless one of that name exists: the name is a digest of the settings, so a
    rerun of the same command follows the job it started instead of starting a second one."""
    name = request[name_key]
    job = find(describe, **{name_key: name})
    if job:
        say(f"{kind} {name} already exists ({job[status_key]}): following it, not starting another")
        return
    for line in announce:
        say(line)
    create(**request)


def report_job(job: dict, final: dict[str, float]) -> None:
    say(f"training job {job['TrainingJobName']}: {job['TrainingJobStatus']}")
    if final:
        say("  final metrics: " + " ".join(f"{k}={v:g}" for k, v in sorted(final.items())))
    else:
        say("  final metrics: none reported yet (the log lines carry them; see CloudWatch)")
    artifacts = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if artifacts:
        say(f"  model artifacts: {artifacts}")
    if job.get("BillableTimeInSeconds"):
        billed, ran = job["BillableTimeInSeconds"], job.get("TrainingTimeInSeconds") or job["BillableTimeInSeconds"]
        say(
            f"  billable seconds: {billed} of {ran}" + (f" (spot saved {100 * (1 - billed / ran):.0f}%)" if ran else "")
        )


@dataclass
class TuningSpec:
    lr_min: float = 1e-4
    lr_max: float = 1e-2
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    max_jobs: int = 8
    max_parallel: int = 2
    strategy: str = "Bayesian"
    max_seconds: int = 0  # 0: no overall limit besides the jobs' own


def tuning_request(spec: JobSpec, tuning: TuningSpec, tuning_name: str | None = None) -> dict:
    """The CreateHyperParameterTuningJob request: log-scaled lr, categorical batch-size, maximise val_accuracy."""
    if not 0 < tuning.lr_min < tuning.lr_max:
        raise ConfigError("--lr-range needs 0 < MIN < MAX")
    if not tuning.batch_sizes or min(tuning.batch_sizes) < 1:
        raise ConfigError("--batch-sizes needs one or more positive integers")
    if not 1 <= tuning.max_parallel <= tuning.max_jobs:
        raise ConfigError("--max-parallel must be between 1 and --max-jobs")
    # No CheckpointConfig: a tuning job's definition holds one S3Uri for every training job it launches
    # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_HyperParameterTrainingJobDefinition.html
    # documents no per-job suffix), and each job would restore the others' checkpoints as its own. A spot
    # job that loses its instance starts its epochs again instead.
    training = definition(spec)
    training["StaticHyperParameters"] = {k: v for k, v in spec.hyperparameters.items() if k not in TUNED}
    limits = {"MaxNumberOfTrainingJobs": tuning.max_jobs, "MaxParallelTrainingJobs": tuning.max_parallel}
    if tuning.max_seconds:
        limits["MaxRuntimeInSeconds"] = tuning.max_seconds
    config = {
        "Strategy": tuning.strategy,
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": metrics.OBJECTIVE},
        "ResourceLimits": limits,
        "ParameterRanges": {
            "ContinuousParameterRanges": [
                {
                    "Name": "lr",
                    "MinValue": repr(tuning.lr_min),
                    "MaxValue": repr(tuning.lr_max),
                    "ScalingType": "Logarithmic",
                }
            ],
            "CategoricalParameterRanges": [{"Name": "batch-size", "Values": [str(b) for b in tuning.batch_sizes]}],
        },
        # Auto stops jobs whose val_accuracy curve trails the others'; Hyperband does its own stopping.
        "TrainingJobEarlyStoppingType": "Off" if tuning.strategy == "Hyperband" else "Auto",
    }
    if tuning.strategy == "Hyperband":
        config["StrategyConfig"] = {"HyperbandStrategyConfig": hyperband_resources(spec.hyperparameters)}
    request = {"HyperParameterTuningJobConfig": config, "TrainingJobDefinition": training, "Tags": tags_list(spec.name)}
    # Tuning job names are limited to 32 characters.
    request["HyperParameterTuningJobName"] = tuning_name or f"{spec.name[:23]}-{digest(request)}"
    return request


def hyperband_resources(hyperparameters: dict[str, str]) -> dict[str, int]:
    """Hyperband's MinResource/MaxResource in epochs. Without MaxResource SageMaker infers it from a static
    `epochs` hyperparameter or refuses the job, so it is always sent: the epochs given, else the training
    image's default. Hyperband counts a job's resources by the objective values it reports, one per epoch
    (the epoch line, metrics.METRIC_DEFINITIONS).
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_HyperbandStrategyConfig.html"""
    epochs = TrainConfig.from_dict(hyperparameters).epochs
    return {"MinResource": 1, "MaxResource": epochs}


def tune(
    aws: Aws, spec: JobSpec, tuning: TuningSpec, tuning_name: str | None = None, wait: bool = True, poll: float = 60
) -> dict:
    """Start the tuning job (or follow the one these settings already started); print the best job."""
    sm = aws.client("sagemaker")
    request = tuning_request(spec, tuning, tuning_name)
    preflight.isolation_weights("CreateHyperParameterTuningJob", request)
    validator.check(sm, "CreateHyperParameterTuningJob", request)  # refused before it is announced or started
    name = request["HyperParameterTuningJobName"]
    announce = [
        f"starting tuning job {name}: {tuning.strategy}, up to {tuning.max_jobs} jobs ({tuning.max_parallel} at a "
        f"time) of {spec.instance_count} x {spec.instance_type}; lr {tuning.lr_min:g}..{tuning.lr_max:g} (log), "
        f"batch-size {{{', '.join(map(str, tuning.batch_sizes))}}}; maximise {metrics.OBJECTIVE}"
    ]
    _start_or_follow(
        sm.describe_hyper_parameter_tuning_job,
        sm.create_hyper_parameter_tuning_job,
        "HyperParameterTuningJobName",
        "HyperParameterTuningJobStatus",
        request,
        "tuning job",
        announce,
    )
    if not wait:
        return sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    job = waiting.poll_until(
        lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name),
        lambda r: r["HyperParameterTuningJobStatus"],
        {"Completed", "Failed", "Stopped"},
        f"tuning job {name}",
        poll=poll,
        describe=_tuning_line,
        timeout=tuning.max_seconds or 7 * 24 * 3600,
        stops_with=waiting.STOP,
    )
    if job["HyperParameterTuningJobStatus"] == "Failed":
        raise AwsError(f"tuning job {name} failed: {job.get('FailureReason', 'no reason given')}")
    report_best(sm, job)
    return job


def _tuning_line(job: dict) -> str:
    c = job.get("TrainingJobStatusCounters", {})
    line = (
        f"{job['HyperParameterTuningJobStatus']}: {c.get('Completed', 0)} completed, {c.get('InProgress', 0)} "
        f"running, {c.get('Stopped', 0)} stopped early, "
        f"{c.get('RetryableError', 0) + c.get('NonRetryableError', 0)} failed"
    )
    best = job.get("BestTrainingJob")
    if best and best.get("FinalHyperParameterTuningJobObjectiveMetric"):
        line += f"; best {metrics.OBJECTIVE}={best['FinalHyperParameterTuningJobObjectiveMetric']['Value']:g}"
    return line


def report_best(sm, job: dict) -> None:
    best = job.get("BestTrainingJob")
    if not best:
        say(f"tuning job {job['HyperParameterTuningJobName']}: {job['HyperParameterTuningJobStatus']}, no best job")
        return
    objective = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
    say(
        f"best training job: {best['TrainingJobName']} "
        f"({objective.get('MetricName', metrics.OBJECTIVE)}={objective.get('Value', float('nan')):g})"
    )
    say(
        "  tuned hyperparameters: "
        + " ".join(f"{k}={v}" for k, v in sorted(best.get("TunedHyperParameters", {}).items()))
    )
    detail = find(sm.describe_training_job, TrainingJobName=best["TrainingJobName"])
    if detail and detail.get("ModelArtifacts"):
        say(f"  model artifacts: {detail['ModelArtifacts']['S3ModelArtifacts']}")
