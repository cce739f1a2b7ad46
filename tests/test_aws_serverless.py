"""Serverless endpoints' control plane: `byoc deploy --serverless`, its image check, status, autoscale and
teardown, against moto_server.

boto3 checks every request against SageMaker's and ECR's service models before it is sent; moto also
checks ServerlessConfig's MemorySizeInMB against its values. botocore checks only minimums, so the
upper bounds (MaxConcurrency 200, ProvisionedConcurrency <= MaxConcurrency) are byoc's, tested here.
"""

from __future__ import annotations

import contextlib
import json

import boto3
import pytest

from byoc.aws import endpoint, pricing
from byoc.aws.session import Aws
from byoc.cli import main
from tests.awsutil import ROLE, byoc, seed_account
from tests.helpers.endpoints import deploy_args, described_config, names

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
CPU_IMAGE = f"{REGISTRY}/byoc-serve-cpu:latest"


def push(repo: str, tag: str, size: int) -> None:
    """An image in moto's ECR whose imageSizeInBytes is `size` (moto reports the manifest's config size)."""
    ecr = boto3.client("ecr")
    if repo not in [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]:
        ecr.create_repository(repositoryName=repo)
    layer = {
        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "size": size,
        "digest": f"sha256:{tag:0>64}",
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": size,
            "digest": layer["digest"],
        },
        "layers": [layer],
    }
    with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):  # an earlier test of this module pushed it
        ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag=tag)


def serverless_args(name: str, *extra: str) -> tuple[str, ...]:
    return deploy_args(name, "--serverless", *extra)


@pytest.fixture
def cpu_image(aws):
    """The CPU image of 3 GB, by the digest deploy pins it to; the account holds the models of this module."""
    push("byoc-serve-cpu", "latest", 3 * 10**9)
    seed_account(models=[f"s3://byoc-models/{name}/model.tar.gz" for name in ("sl1", "sl2", "sl6")])
    image = boto3.client("ecr").describe_images(repositoryName="byoc-serve-cpu", imageIds=[{"imageTag": "latest"}])
    return CPU_IMAGE.replace(":latest", f"@{image['imageDetails'][0]['imageDigest']}")


def test_deploy_serverless_uses_the_cpu_image_and_no_instances_once(cpu_image, capsys):
    args = serverless_args(
        "sl1", "--serverless-memory", "2048", "--max-concurrency", "5", "--provisioned-concurrency", "2"
    )
    out = byoc(capsys, *args)
    assert f"image {cpu_image}: 3.00 GB in ECR (serverless takes up to 10 GB)" in out
    assert "(serverless, 2048 MB, up to 5 concurrent requests, 2 provisioned)" in out
    assert "serverless endpoint sl1: 2048 MB, up to 5 concurrent requests, 2 provisioned; payloads up to 4 MB" in out
    assert "cost: about $0.000040 per second of compute at 2048 MB ($0.040 per 1,000 requests of 1 s)" in out
    assert "provisioned concurrency 2 x 2048 MB bills about $0.067/hour whether used or not" in out
    config, model = described_config("sl1")
    variant = config["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5, "ProvisionedConcurrency": 2}
    assert not {"InstanceType", "InitialInstanceCount", "ContainerStartupHealthCheckTimeoutInSeconds"} & set(variant)
    assert model["PrimaryContainer"]["Image"] == cpu_image
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
        "BYOC_SERVERLESS": "true",
    }
    assert "Mode" not in model["PrimaryContainer"]

    out = byoc(capsys, *args)
    assert f"endpoint sl1 already runs {config['EndpointConfigName']} (InService)" in out
    assert "creating" not in out
    assert len(names("sl1-")[0]) == 1 and len(names("sl1-")[1]) == 1

    out = byoc(capsys, "status", "--name", "sl1")
    assert "kind: serverless" in out
    assert "variant AllTraffic: serverless, 2048 MB, up to 5 concurrent requests, 2 provisioned" in out
    assert "per request: about $0.000040 per second of compute ($0.040 per 1,000 requests of 1 s)" in out
    assert "estimated cost: about $0.07/hour" in out and "serverless provisioned 2 x 2048 MB $0.067/h" in out
    found = _status("sl1")
    assert found["kind"] == "serverless" and found["hourly_usd"] == pytest.approx(2 * 2 * 0.000004646 * 3600)

    assert main(["autoscale", "--name", "sl1", "--target-invocations", "100"]) == 1
    assert "endpoint sl1 is serverless: SageMaker scales it by itself up to its --max-concurrency" in (
        capsys.readouterr().err
    )

    out = byoc(capsys, "teardown", "--name", "sl1", "--poll", "0.05")
    assert "deleting endpoint sl1" in out and "deleting endpoint config sl1-c-" in out
    assert "kept: the models under" not in out
    assert names("sl1-") == ([], [])
    assert "nothing left to delete" in byoc(capsys, "teardown", "--name", "sl1")


def test_on_demand_serverless_bills_nothing_by_the_hour(cpu_image, capsys):
    byoc(capsys, *serverless_args("sl2", "--serverless-memory", "1024", "--max-concurrency", "1"))
    config, _ = described_config("sl2")
    assert config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 1}
    out = byoc(capsys, "status", "--name", "sl2")
    assert "up to 1 concurrent requests\n" in out and "provisioned" not in out
    assert "estimated cost: nothing billed by the hour" in out


def test_serverless_refuses_images_it_cannot_run(aws, capsys):
    push("byoc-serve", "big", 11 * 10**9)
    seed_account(models=["s3://byoc-models/sl3/model.tar.gz"])
    cases = [  # (image, message, exit code: 2 for what the pre-flight checks refuse)
        (f"{REGISTRY}/byoc-serve:big", "is 11.0 GB in ECR and serverless endpoints", 1),
        (f"{REGISTRY}/byoc-serve:missing", "is not in ECR: push it first", 2),
        (f"{REGISTRY}/nothing-here:latest", "is not in ECR: push it first", 2),
        ("docker.io/library/python:3.11", "--serverless runs images from Amazon ECR only", 1),
        (
            f"{REGISTRY.replace('us-east-1', 'eu-west-1')}/byoc-serve:big",
            "is in eu-west-1, the endpoint in us-east-1",
            1,
        ),
    ]
    for image, message, code in cases:
        args = serverless_args("sl3", "--serverless-memory", "2048", "--max-concurrency", "2", "--image", image)
        assert main(list(args)) == code, image
        assert message in capsys.readouterr().err, image
    assert names("sl3") == ([], [])


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--max-concurrency", "2"), "--serverless needs --serverless-memory MB and --max-concurrency N"),
        (("--serverless-memory", "2048"), "--serverless needs --serverless-memory MB and --max-concurrency N"),
        (("--serverless-memory", "2048", "--max-concurrency", "0"), "--max-concurrency must be 1 to 200, got 0"),
        (("--serverless-memory", "2048", "--max-concurrency", "201"), "--max-concurrency must be 1 to 200, got 201"),
        (
            ("--serverless-memory", "2048", "--max-concurrency", "4", "--provisioned-concurrency", "5"),
            "--provisioned-concurrency must be 1 to --max-concurrency (4), got 5",
        ),
        (
            ("--serverless-memory", "2048", "--max-concurrency", "4", "--async", "--async-output", "s3://b/o/"),
            "--serverless and --async",
        ),
        (
            ("--serverless-memory", "2048", "--max-concurrency", "4", "--instance-type", "ml.m5.large"),
            "and --instance-type: a",
        ),
        (
            ("--serverless-memory", "2048", "--max-concurrency", "4", "--instance-count", "2"),
            "--serverless and --instance-count",
        ),
    ],
)
def test_serverless_flag_errors_create_nothing(cpu_image, capsys, extra, message):
    assert main(list(serverless_args("sl4", *extra))) == 1
    assert message in capsys.readouterr().err
    assert names("sl4") == ([], [])


def test_serverless_flags_need_serverless_and_memory_is_one_of_sagemakers(aws, capsys):
    argv = ["deploy", "--name", "sl5", "--model-data", "s3://b/m.tar.gz", "--role", ROLE]
    assert main([*argv, "--serverless-memory", "2048", "--max-concurrency", "3"]) == 1
    assert (
        "--serverless-memory, --max-concurrency: only for serverless endpoints; add --serverless"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main([*argv, "--serverless", "--serverless-memory", "1500", "--max-concurrency", "3"])
    assert "invalid choice: 1500" in capsys.readouterr().err
    assert (
        main(
            [
                *argv,
                "--serverless",
                "--multi-model",
                "s3://b/m/",
                "--serverless-memory",
                "1024",
                "--max-concurrency",
                "1",
            ]
        )
        == 1
    )
    assert "--model-data and --multi-model: pick one" in capsys.readouterr().err
    assert main(["deploy", "--name", "sl5", "--role", ROLE, "--serverless", "--multi-model", "s3://b/m/"]) == 1
    assert "--serverless needs --serverless-memory" in capsys.readouterr().err
    argv = ["deploy", "--name", "sl5", "--role", ROLE, "--multi-model", "s3://b/m/", "--serverless"]
    assert main([*argv, "--serverless-memory", "1024", "--max-concurrency", "1"]) == 1
    assert "--serverless and --multi-model" in capsys.readouterr().err
    assert names("sl5") == ([], [])


def test_a_real_time_endpoint_is_not_updated_to_serverless(cpu_image, capsys):
    byoc(capsys, "deploy", "--name", "sl6", "--model-data", "s3://byoc-models/sl6/model.tar.gz", "--role", ROLE)
    before = names("sl6")
    assert main(list(serverless_args("sl6", "--serverless-memory", "2048", "--max-concurrency", "2"))) == 1
    assert (
        "endpoint sl6 runs on instances, and SageMaker cannot update an instance-backed endpoint to serverless: "
        "run `byoc teardown --name sl6` first"
    ) in capsys.readouterr().err
    assert names("sl6") == before


def test_the_serverless_config_matches_sagemakers_model():
    from botocore.validate import validate_parameters

    serverless = endpoint.ServerlessSpec(memory=6144, max_concurrency=200, provisioned_concurrency=200)
    spec = endpoint.DeploySpec(
        name="sl7", image=CPU_IMAGE, model_data="s3://b/m.tar.gz", role=ROLE, serverless=serverless
    )
    shape = boto3.client("sagemaker", region_name="us-east-1").meta.service_model.operation_model(
        "CreateEndpointConfig"
    )
    validate_parameters(endpoint.config_request(spec, "sl7-m-x"), shape.input_shape)
    assert tuple(range(1024, 6145, 1024)) == endpoint.SERVERLESS_MEMORY_MB


def test_serverless_prices():
    assert pricing.serverless_request(2048, 1.0) == pytest.approx(0.00004)
    assert pricing.serverless_request(1024, 0.25) == pytest.approx(0.000005)
    assert pricing.serverless_provisioned_hourly(1, 1024) == pytest.approx(0.000004646 * 3600)


def _status(name: str) -> dict:
    from byoc.aws import status

    return status.status(Aws(boto3.Session(), "us-east-1"), name)
