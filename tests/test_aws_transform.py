"""`byoc batch-transform` against moto_server (model, job, tags, S3 counts, idempotency); the wait's
progress, failure and billed cost with botocore's Stubber (moto finishes transform jobs at once).

boto3 checks every request against SageMaker's service model before it is sent, so the moto round
trips check the CreateTransformJob field names, enums and bounds; the request builders are checked
against the same model directly (botocore.validate) for each content type.
"""

from __future__ import annotations

import datetime as dt

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from byoc.aws import transform_job
from byoc.aws.endpoint import DeploySpec, model_request
from byoc.aws.inventory import owned_models
from byoc.aws.session import Aws, AwsError
from byoc.cli import main
from byoc.core.errors import ConfigError
from byoc.local.batch_transform import Strategy
from tests.awsutil import ROLE, byoc, seed_account

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-serve:latest"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:transform-job/x"


def spec(**overrides) -> transform_job.TransformSpec:
    values = dict(
        name="dogs",
        image=IMAGE,
        role=ROLE,
        model_data="s3://models/dogs/model.tar.gz",
        input="s3://data/batch/in/",
        output="s3://data/batch/out/",
    )
    values.update(overrides)
    return transform_job.TransformSpec(**values)


def sagemaker():
    return boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def validate(request: dict) -> None:
    validate_parameters(request, sagemaker().meta.service_model.operation_model("CreateTransformJob").input_shape)


def test_jsonlines_request_splits_lines_and_batches():
    request = transform_job.transform_request(spec(content_type="application/jsonlines"), "dogs-m-1234abcd")
    validate(request)
    assert request["BatchStrategy"] == "MultiRecord"
    assert request["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://data/batch/in/"}},
        "ContentType": "application/jsonlines",
        "CompressionType": "None",
        "SplitType": "Line",
    }
    assert request["TransformOutput"] == {
        "S3OutputPath": "s3://data/batch/out/",
        "Accept": "application/jsonlines",
        "AssembleWith": "Line",
    }
    assert request["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 3}
    assert request["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    assert request["Tags"] == [{"Key": "byoc:name", "Value": "dogs"}]
    # left out, so SageMaker asks the container's /execution-parameters
    assert "MaxPayloadInMB" not in request and "MaxConcurrentTransforms" not in request
    assert request["TransformJobName"].startswith("dogs-t-") and len(request["TransformJobName"]) == 15


@pytest.mark.parametrize(
    "content_type", ["image/jpeg", "image/png", "application/x-image", "application/x-tar", "application/zip"]
)
def test_images_and_archives_go_one_object_per_request(content_type):
    request = transform_job.transform_request(
        spec(content_type=content_type, max_payload_mb=20, concurrency=4, instance_count=2), "m"
    )
    validate(request)
    assert request["BatchStrategy"] == "SingleRecord"
    assert request["TransformInput"]["SplitType"] == "None" and request["TransformInput"]["ContentType"] == content_type
    assert request["TransformOutput"]["AssembleWith"] == "None"
    assert request["TransformOutput"]["Accept"] == "application/json"
    assert (request["MaxPayloadInMB"], request["MaxConcurrentTransforms"]) == (20, 4)


def test_job_name_is_a_digest_of_the_settings():
    name = transform_job.transform_request(spec(), "m")["TransformJobName"]
    assert transform_job.transform_request(spec(), "m")["TransformJobName"] == name
    assert transform_job.transform_request(spec(max_payload_mb=10), "m")["TransformJobName"] != name
    assert transform_job.transform_request(spec(), "other-model")["TransformJobName"] != name
    assert transform_job.transform_request(spec(), "m", "mine")["TransformJobName"] == "mine"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"input": "data/in"}, "--input must be an s3:// URI (s3://BUCKET/PREFIX), got 'data/in'"),
        ({"output": "s3://"}, "--output must be an s3:// URI"),
        ({"max_payload_mb": 101}, "--max-payload-mb 101: must be between 1 and 100"),
        ({"max_payload_mb": 0}, "--max-payload-mb 0: must be between 1 and 100"),
        ({"content_type": "text/csv"}, "--content-type 'text/csv': expected one of application/jsonlines"),
        ({"batch_strategy": Strategy.MULTI_RECORD}, "--batch-strategy MultiRecord needs split records"),
        ({"instance_count": 0}, "--instance-count must be >= 1"),
        ({"max_retries": 4}, "--max-retries must be between 0 and 3"),
    ],
)
def test_bad_settings_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as caught:
        transform_job.transform_request(spec(**overrides), "m")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def transform_args(name: str, *extra: str) -> list[str]:
    return [
        "batch-transform",
        "--name",
        name,
        "--model-data",
        f"s3://byoc-models/{name}/model.tar.gz",
        "--input",
        f"s3://byoc-batch/{name}/in/",
        "--output",
        f"s3://byoc-batch/{name}/out/",
        "--role",
        ROLE,
        "--poll",
        "0.05",
        *extra,
    ]


def test_bad_flags_fail_before_anything_is_created(aws, capsys):
    seed_account(models=["s3://byoc-models/tx0/model.tar.gz"], data=["s3://byoc-batch/tx0/in"])
    for extra, message in (
        (["--input", "/tmp/in"], "error: --input must be an s3:// URI (s3://BUCKET/PREFIX), got '/tmp/in'"),
        (["--model-data", "model.tar.gz"], "error: --model-data must be an s3:// URI of a model.tar.gz"),
        (["--max-payload-mb", "200"], "error: --max-payload-mb 200: must be between 1 and 100 (SageMaker's limit)"),
        (["--container", "http://127.0.0.1:1"], "error: --container goes with --local"),
    ):
        assert main(transform_args("tx0") + extra) == 1
        assert capsys.readouterr().err.strip().startswith(message)
    assert main(["batch-transform", "--name", "tx0", "--input", "s3://b/in"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: batch-transform needs --model-data, --output (or --local INPUT_DIR OUTPUT_DIR --container URL)"
    )
    with pytest.raises(SystemExit):  # argparse: a content type not in the list is a usage error
        main(transform_args("tx0", "--content-type", "text/csv"))
    assert "invalid choice: 'text/csv'" in capsys.readouterr().err
    sm = boto3.client("sagemaker")
    assert sm.list_models(NameContains="tx0")["Models"] == []
    assert sm.list_transform_jobs(NameContains="tx0")["TransformJobSummaries"] == []


def test_batch_transform_creates_model_and_job_once_and_reports_counts(aws, capsys):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="byoc-batch")
    digests = seed_account(models=["s3://byoc-models/tx1/model.tar.gz"])
    for key in ("tx1/in/a.jsonl", "tx1/in/sub/b.jsonl", "tx1/in/c.jsonl", "tx1/in/sub/"):
        s3.put_object(Bucket="byoc-batch", Key=key, Body=b"{}")
    for key in ("tx1/out/a.jsonl.out", "tx1/out/sub/b.jsonl.out"):  # what the job would have written
        s3.put_object(Bucket="byoc-batch", Key=key, Body=b"{}")
    args = transform_args("tx1", "--content-type", "application/jsonlines", "--max-payload-mb", "8")
    out = byoc(capsys, *args)
    assert "creating model tx1-m-" in out and "starting transform job tx1-t-" in out
    assert "split Line, MultiRecord, MaxPayloadInMB 8, MaxConcurrentTransforms from the container" in out
    assert "transform job tx1-t-" in out and ": Completed" in out
    assert "output: s3://byoc-batch/tx1/out/ (2 objects written for 3 input objects)" in out
    assert "billed: 0 s on 1 x ml.m5.large: about $0.000" in out

    sm = boto3.client("sagemaker")
    jobs = sm.list_transform_jobs(NameContains="tx1")["TransformJobSummaries"]
    assert len(jobs) == 1
    job = sm.describe_transform_job(TransformJobName=jobs[0]["TransformJobName"])
    assert job["TransformInput"]["SplitType"] == "Line" and job["BatchStrategy"] == "MultiRecord"
    assert job["MaxPayloadInMB"] == 8 and "MaxConcurrentTransforms" not in job
    assert job["TransformOutput"]["AssembleWith"] == "Line"
    model = sm.describe_model(ModelName=job["ModelName"])
    assert model["PrimaryContainer"] == {
        "Image": IMAGE.replace(":latest", f"@{digests['byoc-serve']}"),
        "ModelDataUrl": "s3://byoc-models/tx1/model.tar.gz",
        "Environment": {},
    }
    for arn in (job["TransformJobArn"], model["ModelArn"]):
        assert {"Key": "byoc:name", "Value": "tx1"} in sm.list_tags(ResourceArn=arn)["Tags"]
    # the model carries byoc:name, so status and teardown (which list models by it) see it
    assert owned_models(sm, "tx1") == [job["ModelName"]]

    out = byoc(capsys, *args)
    assert f"model {job['ModelName']} exists" in out
    assert f"transform job {job['TransformJobName']} already exists (Completed): following it" in out
    assert "creating model" not in out and "starting transform job" not in out
    assert len(sm.list_transform_jobs(NameContains="tx1")["TransformJobSummaries"]) == 1
    assert len(sm.list_models(NameContains="tx1")["Models"]) == 1
    assert f"transform job {job['TransformJobName']}: Completed" in byoc(capsys, "status", "--name", "tx1")


def test_images_job_uses_the_deploy_model_and_the_default_image(aws, capsys):
    boto3.client("s3").create_bucket(Bucket="byoc-batch")
    seed_account(models=["s3://byoc-models/tx2/model.tar.gz"], data=["s3://byoc-batch/tx2/in"])
    out = byoc(capsys, *transform_args("tx2", "--no-wait", "--concurrency", "2", "--instance-type", "ml.c5.xlarge"))
    assert "not waiting: run the same command again to follow tx2-t-" in out
    assert "split None, SingleRecord" in out
    sm = boto3.client("sagemaker")
    job = sm.list_transform_jobs(NameContains="tx2")["TransformJobSummaries"][0]
    described = sm.describe_transform_job(TransformJobName=job["TransformJobName"])
    assert described["TransformInput"]["ContentType"] == "application/x-image"
    assert described["MaxConcurrentTransforms"] == 2 and described["TransformResources"]["InstanceCount"] == 1
    assert described["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 3}
    # the same model `byoc deploy --name tx2` would make for that model data
    deploy = ("deploy", "--name", "tx2", "--model-data", "s3://byoc-models/tx2/model.tar.gz", "--role", ROLE)
    deploy_out = byoc(capsys, *deploy, "--no-wait")
    assert f"model {described['ModelName']} exists" in deploy_out


def _job(request: dict, status: str, **extra) -> dict:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return {
        "TransformJobName": request["TransformJobName"],
        "TransformJobArn": ARN,
        "TransformJobStatus": status,
        "ModelName": request["ModelName"],
        "TransformInput": request["TransformInput"],
        "TransformOutput": request["TransformOutput"],
        "TransformResources": request["TransformResources"],
        "CreationTime": now,
        **extra,
    }


def _stubbed(aws_url: str, sm) -> Aws:
    return Aws(
        session=boto3.Session(region_name="us-east-1"),
        region="us-east-1",
        _account="123456789012",
        _clients={"sagemaker": sm, "s3": boto3.client("s3", endpoint_url=aws_url)},
    )


def _expect_start(stub: Stubber, request: dict, model: dict) -> None:
    stub.add_client_error("describe_model", "ValidationException", "Could not find model", 400)
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"}, model)
    stub.add_client_error(
        "describe_transform_job",
        "ValidationException",
        "Could not find transform job",
        400,
        expected_params={"TransformJobName": request["TransformJobName"]},
    )
    stub.add_response("create_transform_job", {"TransformJobArn": ARN}, request)


def test_wait_shows_progress_and_the_billed_cost(aws, capsys):
    boto3.client("s3").create_bucket(Bucket="data")
    sm = sagemaker()
    job_spec = spec(instance_count=2, content_type="application/jsonlines")
    model = model_request(DeploySpec(name="dogs", image=IMAGE, model_data=job_spec.model_data, role=ROLE))
    request = transform_job.transform_request(job_spec, model["ModelName"])
    start = dt.datetime(2026, 1, 1, 1, tzinfo=dt.timezone.utc)
    name = {"TransformJobName": request["TransformJobName"]}
    with Stubber(sm) as stub:
        _expect_start(stub, request, model)
        stub.add_response("describe_transform_job", _job(request, "InProgress"), name)
        done = _job(
            request,
            "Completed",
            TransformStartTime=start,
            TransformEndTime=start + dt.timedelta(minutes=30),
        )
        stub.add_response("describe_transform_job", done, name)
        stub.add_response("describe_transform_job", done, name)
        transform_job.transform(_stubbed(aws, sm), job_spec, poll=0.01)
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert f"transform job {request['TransformJobName']}: InProgress" in out
    assert f"transform job {request['TransformJobName']}: done" in out
    assert "output: s3://data/batch/out/ (0 objects written for 0 input objects)" in out
    # 30 minutes x 2 x ml.m5.large ($0.115/h)
    assert "billed: 1800 s on 2 x ml.m5.large: about $0.115 (on-demand" in out


def test_failed_job_says_why_and_an_unpriced_type_says_so(aws, capsys):
    boto3.client("s3").create_bucket(Bucket="data")
    sm = sagemaker()
    job_spec = spec(instance_type="ml.m4.xlarge")
    model = model_request(DeploySpec(name="dogs", image=IMAGE, model_data=job_spec.model_data, role=ROLE))
    request = transform_job.transform_request(job_spec, model["ModelName"])
    name = {"TransformJobName": request["TransformJobName"]}
    with Stubber(sm) as stub:
        _expect_start(stub, request, model)
        reason = "ClientError: See job logs for more information"
        stub.add_response("describe_transform_job", _job(request, "Failed", FailureReason=reason), name)
        with pytest.raises(AwsError, match=f"transform job {request['TransformJobName']}: Failed: {reason}"):
            transform_job.transform(_stubbed(aws, sm), job_spec, poll=0.01)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    stopped = _job(request, "Stopped", TransformStartTime=start, TransformEndTime=start + dt.timedelta(seconds=90))
    assert transform_job.billed(stopped) == (90.0, None)
    transform_job.report(_stubbed(aws, sm), stopped)
    out = capsys.readouterr().out
    assert "stopped before the end" in out and "billed: 90 s on 1 x ml.m4.xlarge: unknown price" in out
