"""`byoc deploy` as the endpoint tests run it against moto_server, and what SageMaker then describes."""

from __future__ import annotations

import boto3

from tests.awsutil import ROLE


def deploy_args(name: str, *extra: str, poll: str = "0.05") -> tuple[str, ...]:
    """`byoc deploy` of s3://byoc-models/NAME/model.tar.gz with the test role, polling every POLL seconds."""
    return (
        "deploy",
        "--name",
        name,
        "--model-data",
        f"s3://byoc-models/{name}/model.tar.gz",
        "--role",
        ROLE,
        "--poll",
        poll,
        *extra,
    )


def async_args(name: str, *extra: str) -> tuple[str, ...]:
    return deploy_args(name, "--async", "--async-output", f"s3://byoc-models/byoc/{name}/async/results/", *extra)


def described_config(name: str) -> tuple[dict, dict]:
    """The endpoint config and model endpoint NAME runs, as SageMaker describes them."""
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    return config, sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])


def names(prefix: str) -> tuple[list[str], list[str]]:
    """The endpoint configs and models whose names start with PREFIX (moto ignores NameContains)."""
    sm = boto3.client("sagemaker")
    configs = [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    models = [m["ModelName"] for m in sm.list_models()["Models"]]
    return sorted(c for c in configs if c.startswith(prefix)), sorted(m for m in models if m.startswith(prefix))
