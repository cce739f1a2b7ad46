"""Approximate on-demand prices (USD per hour, us-east-1, Linux) for cost estimates in `byoc status`.

Approximate and dated (checked against the public SageMaker and Lambda price pages in 2025);
other regions differ by up to about 30%. Real-time hosting, asynchronous hosting and training use
the same figures here; spot training is typically 60-90% cheaper. An asynchronous endpoint bills
these instance-hours only while it has instances: scaled to zero (`byoc autoscale --min 0`) it
bills none, only S3 storage and requests and SNS notifications, by use. A multi-model endpoint bills
its instances however many models it serves. A serverless endpoint has no instances: it bills the
compute of each request (memory x duration) and nothing while idle, plus provisioned concurrency
by the hour while allocated (checked against the SageMaker price page in 2025, like the rest). Not
a bill: use Cost Explorer.
"""

from __future__ import annotations

SAGEMAKER_HOURLY = {
    "ml.t2.medium": 0.056,
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.large": 0.102,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g4dn.12xlarge": 4.89,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
}
# Lambda provisioned concurrency: about $0.0000041667 per GB-second allocated.
LAMBDA_PROVISIONED_GB_HOUR = 0.0000041667 * 3600


def instance_hourly(instance_type: str, count: int = 1) -> float | None:
    """Hourly price of `count` instances, or None for a type not in the table."""
    price = SAGEMAKER_HOURLY.get(instance_type)
    return None if price is None else price * count


def provisioned_hourly(concurrency: int, memory_mb: int) -> float:
    return concurrency * memory_mb / 1024 * LAMBDA_PROVISIONED_GB_HOUR


# Serverless Inference, per GB-second of configured memory: on-demand compute while a request runs, and
# provisioned concurrency while it is allocated (used or not).
SERVERLESS_GB_SECOND = 0.0000200
SERVERLESS_PROVISIONED_GB_SECOND = 0.000004646


def serverless_request(memory_mb: int, seconds: float = 1.0) -> float:
    """Compute price of one serverless request of `seconds` at `memory_mb` (data transfer not included)."""
    return memory_mb / 1024 * seconds * SERVERLESS_GB_SECOND


def serverless_provisioned_hourly(concurrency: int, memory_mb: int) -> float:
    """Hourly price of keeping `concurrency` serverless copies of `memory_mb` provisioned."""
    return concurrency * memory_mb / 1024 * SERVERLESS_PROVISIONED_GB_SECOND * 3600


# EC2 on-demand, Linux, us-east-1 (checked against the public EC2 price page in 2025, approximate like the
# rest): what `byoc ec2-train` instances bill per second (60 s minimum). Spot bills the spot price instead,
# typically 60-70% less for these types. The root volume bills gp3 storage while the instance exists.
EC2_HOURLY = {
    "t3.medium": 0.0416,
    "m5.large": 0.096,
    "m5.xlarge": 0.192,
    "m5.2xlarge": 0.384,
    "c5.xlarge": 0.17,
    "c5.2xlarge": 0.34,
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "p3.2xlarge": 3.06,
}
EBS_GP3_GB_MONTH = 0.08
EC2_MINIMUM_SECONDS = 60


def ec2_hourly(instance_type: str) -> float | None:
    """Hourly on-demand price of one EC2 instance, or None for a type not in the table."""
    return EC2_HOURLY.get(instance_type)


def ec2_run(instance_type: str, seconds: float, volume_gb: int) -> float | None:
    """On-demand price of one instance billed for `seconds` with a `volume_gb` gp3 root volume."""
    hourly = ec2_hourly(instance_type)
    if hourly is None:
        return None
    billed = max(seconds, EC2_MINIMUM_SECONDS)
    return hourly * billed / 3600 + volume_gb * EBS_GP3_GB_MONTH * billed / (730 * 3600)
