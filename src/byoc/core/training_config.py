"""/opt/ml/input/config as SageMaker writes it for a training job's host: the three documents
byoc.training.contract reads. Written for `byoc local train` (byoc.local.opt_ml), for an EC2
instance's user data (byoc.aws.ec2_train) and by the tests, so all of them write what SageMaker
writes, once. Standard library only: the AWS commands never import torch."""

from __future__ import annotations

import json
from collections.abc import Mapping

CHANNEL = "training"  # one channel holding train/, valid/ and test/ (the dogImages layout)
GROUP = "homogeneousCluster"  # SageMaker's name for the instance group of a job without groups


def hyperparameters(values: Mapping[str, object]) -> dict[str, str]:
    """hyperparameters.json: SageMaker writes every value as a string."""
    return {name: value if isinstance(value, str) else json.dumps(value) for name, value in values.items()}


def resource_config(host: str, hosts: list[str], instance_type: str, interface: str) -> dict:
    """resourceconfig.json for `host` of `hosts`, the interface its collectives use."""
    return {
        "current_host": host,
        "current_instance_type": instance_type,
        "current_group_name": GROUP,
        "hosts": hosts,
        "instance_groups": [{"instance_group_name": GROUP, "instance_type": instance_type, "hosts": hosts}],
        "network_interface_name": interface,
    }


def input_data_config(channels: tuple[str, ...] = (CHANNEL,)) -> dict:
    """inputdataconfig.json: each channel in File mode, as the job's data is copied in."""
    file_mode = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    return {name: dict(file_mode) for name in channels}


def documents(
    host: str,
    hosts: list[str],
    values: Mapping[str, object],
    instance_type: str,
    interface: str,
    channels: tuple[str, ...] = (CHANNEL,),
) -> dict[str, str]:
    """The three files by name, as JSON text."""
    return {
        "hyperparameters.json": json.dumps(hyperparameters(values), sort_keys=True),
        "resourceconfig.json": json.dumps(resource_config(host, hosts, instance_type, interface)),
        "inputdataconfig.json": json.dumps(input_data_config(channels)),
    }
