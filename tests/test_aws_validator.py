"""byoc.aws.validator: requests checked as AWS checks them (service-model max, pattern, enum, and the
documented cross-field rules of byoc.aws.aws_rules), in the CLI before anything is created and in every
test through tests/aws_requests.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from byoc.aws import aws_rules, validator
from tests.awsutil import ROLE, seed_account

ROOT = Path(__file__).resolve().parents[1]


def client(service: str):
    """A client that is never sent anything (the checks read only its service model)."""
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def problems(service: str, operation: str, params: dict) -> dict[str, str]:
    return {f.path: f.problem for f in validator.findings(client(service), operation, params)}


def model(**container) -> dict:
    return {"ModelName": "m", "ExecutionRoleArn": ROLE, "PrimaryContainer": {"Image": "i", **container}}


def test_string_over_its_max_length_is_refused():
    assert problems("sagemaker", "CreateModel", {**model(), "ModelName": "a" * 64}) == {
        "ModelName": "64 characters, at most 63 allowed"
    }


def test_java_pattern_with_unicode_classes_is_read_as_aws_reads_it():
    """Tag keys match ([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*): letters of any script pass, '#' does not."""
    assert problems("sagemaker", "CreateModel", {**model(), "Tags": [{"Key": "café été", "Value": "v"}]}) == {}
    found = problems("sagemaker", "CreateModel", {**model(), "Tags": [{"Key": "a#b", "Value": "v"}]})
    assert list(found) == ["Tags[0].Key"] and "does not match the pattern" in found["Tags[0].Key"]


def test_surrogate_pairs_in_patterns_are_code_points():
    """Application Auto Scaling's XmlString names U+10000..U+10FFFF as a UTF-16 surrogate range."""
    params = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/e/variant/v\U0001f600", "ScalableDimension": "x"}
    found = problems("application-autoscaling", "DescribeScalableTargets", {**params, "ResourceIds": ["ok\U0001f600"]})
    assert "ResourceIds[0]" not in found
    assert "ResourceIds[0]" in problems(
        "application-autoscaling", "DescribeScalableTargets", {"ServiceNamespace": "sagemaker", "ResourceIds": ["\x01"]}
    )


def test_every_pattern_of_the_services_byoc_calls_compiles():
    """A pattern the validator cannot read would be a check silently lost."""
    services = ("sagemaker", "sagemaker-runtime", "s3", "lambda", "iam", "ec2", "logs", "cloudwatch")
    for service in (*services, "application-autoscaling", "ecr", "ssm", "sts"):
        shapes = client(service).meta.service_model._shape_resolver._shape_map  # every shape, named
        for name, shape in shapes.items():
            if "pattern" in shape:
                assert validator.pattern(shape["pattern"]), f"{service} {name}"


def test_enum_outside_its_values_is_refused_with_the_closest():
    variant = {"VariantName": "v", "ModelName": "m", "InstanceType": "ml.m5.lrge", "InitialInstanceCount": 1}
    found = problems("sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": [variant]})
    assert list(found) == ["ProductionVariants[0].InstanceType"]
    assert "closest: ml.m5.large" in found["ProductionVariants[0].InstanceType"]


def test_number_over_its_max_is_refused_at_its_nested_path():
    variant = {
        "VariantName": "v",
        "ModelName": "m",
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
        "ContainerStartupHealthCheckTimeoutInSeconds": 5000,
    }
    found = problems("sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": [variant]})
    assert found == {
        "ProductionVariants[0].ContainerStartupHealthCheckTimeoutInSeconds": "5000 is over the maximum 3600"
    }


def test_list_and_map_over_their_max_are_refused():
    tags = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    assert problems("sagemaker", "CreateModel", {**model(), "Tags": tags}) == {"Tags": "51 items, at most 50 allowed"}
    env = {f"K{i}": "v" for i in range(101)}
    assert problems("sagemaker", "CreateModel", model(Environment=env)) == {
        "PrimaryContainer.Environment": "101 entries, at most 100 allowed"
    }


def test_a_valid_request_has_no_findings():
    assert problems("sagemaker", "CreateModel", model(Environment={"A": "1"})) == {}


# --- the cross-field rules: one case per rule, (operation, a request breaking it, one keeping it) ---

VARIANT = {"VariantName": "v", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
SERVERLESS = {"VariantName": "v", "ModelName": "m", "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}
TUNING_JOB = {
    "HyperParameterTuningJobName": "t",
    "HyperParameterTuningJobConfig": {
        "Strategy": "Hyperband",
        "ResourceLimits": {"MaxParallelTrainingJobs": 1},
        "TrainingJobEarlyStoppingType": "Off",
    },
    "TrainingJobDefinition": {
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "i"},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "StaticHyperParameters": {"epochs": "10"},
    },
}
TRAINING_JOB = {
    "TrainingJobName": "j",
    **{k: v for k, v in TUNING_JOB["TrainingJobDefinition"].items() if k != "StaticHyperParameters"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
}
BLUE_GREEN = {
    "TrafficRoutingConfiguration": {
        "Type": "CANARY",
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
        "WaitIntervalInSeconds": 300,
    }
}
ROLLING = {"MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 20}, "WaitIntervalInSeconds": 300}
ALARM = {
    "AlarmName": "a",
    "EvaluationPeriods": 3,
    "Threshold": 1.0,
    "ComparisonOperator": "GreaterThanThreshold",
    "MetricName": "Invocation5XXErrors",
    "Namespace": "AWS/SageMaker",
    "Period": 60,
    "Statistic": "Sum",
}
TRACKING = {
    "TargetValue": 5.0,
    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
}
POLICY = {
    "PolicyName": "p",
    "ServiceNamespace": "sagemaker",
    "ResourceId": "endpoint/e/variant/v",
    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    "PolicyType": "TargetTrackingScaling",
}
TARGET = {
    "ServiceNamespace": "sagemaker",
    "ResourceId": "endpoint/e/variant/v",
    "ScalableDimension": POLICY["ScalableDimension"],
}
PERMISSION = {"FunctionName": "f", "StatementId": "s", "Principal": "123456789012"}
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
VPC_GOOD = {"Subnets": ["subnet-0123abcd"], "SecurityGroupIds": ["sg-0123abcd"]}
VPC_BAD_GROUP = {"Subnets": ["subnet-0123abcd"], "SecurityGroupIds": ["default"]}
G4DN_KEY = {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10, "VolumeKmsKeyId": KEY_ARN}
INTERFACE = {"DeviceIndex": 0, "SubnetId": "subnet-0123abcd", "AssociatePublicIpAddress": False}
TRANSFORM = {
    "TransformJobName": "t",
    "ModelName": "m",
    "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}},
    "TransformOutput": {"S3OutputPath": "s3://b/out"},
    "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
}


def _with(base: dict, path: str, value) -> dict:
    """A deep copy of `base` with `path` (dotted) set to `value` (None: removed)."""
    import copy

    result = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = result
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return result


def _config(*variants, **extra) -> dict:
    return {"EndpointConfigName": "c", "ProductionVariants": list(variants), **extra}


def _update(**extra) -> dict:
    return {"EndpointName": "e", "EndpointConfigName": "c", **extra}


def _schedule(operation: str, path: str | None = None, value=None) -> dict:
    """A monitoring schedule request as `byoc monitor schedule` makes it (hourly), with one change."""
    from byoc.aws import monitoring

    request = monitoring.schedule_request(
        "dogs",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-serve-cpu:latest",
        "arn:aws:iam::123456789012:role/byoc/byoc-dogs-monitor",
        monitoring.Places("s3://b/byoc/dogs/capture", "b", "byoc/dogs/monitoring"),
        "hour",
    )
    if operation == "UpdateMonitoringSchedule":
        request.pop("Tags")
    return _with(request, f"MonitoringScheduleConfig.{path}", value) if path else request


def _bucket_encryption(default: dict) -> dict:
    return {
        "Bucket": "b",
        "ServerSideEncryptionConfiguration": {"Rules": [{"ApplyServerSideEncryptionByDefault": default}]},
    }


LATEST_EXCLUDED = {"imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}]}


# rule name -> (service, operation, breaking request, keeping request)
CASES = {
    "spot_wait": (
        "sagemaker",
        "CreateTrainingJob",
        {**TRAINING_JOB, "EnableManagedSpotTraining": True},
        {**_with(TRAINING_JOB, "StoppingCondition.MaxWaitTimeInSeconds", 3600), "EnableManagedSpotTraining": True},
    ),
    "tuning_spot_wait": (
        "sagemaker",
        "CreateHyperParameterTuningJob",
        _with(TUNING_JOB, "TrainingJobDefinition.StoppingCondition.MaxWaitTimeInSeconds", 1800),
        _with(TUNING_JOB, "TrainingJobDefinition.StoppingCondition.MaxWaitTimeInSeconds", 7200),
    ),
    "hyperband_no_early_stopping": (
        "sagemaker",
        "CreateHyperParameterTuningJob",
        _with(TUNING_JOB, "HyperParameterTuningJobConfig.TrainingJobEarlyStoppingType", "Auto"),
        TUNING_JOB,
    ),
    "hyperband_max_resource": (
        "sagemaker",
        "CreateHyperParameterTuningJob",
        _with(TUNING_JOB, "TrainingJobDefinition.StaticHyperParameters", {"lr": "0.1"}),
        _with(
            _with(TUNING_JOB, "TrainingJobDefinition.StaticHyperParameters", {"lr": "0.1"}),
            "HyperParameterTuningJobConfig.StrategyConfig",
            {"HyperbandStrategyConfig": {"MaxResource": 10}},
        ),
    ),
    "strategy_config_only_hyperband": (
        "sagemaker",
        "CreateHyperParameterTuningJob",
        _with(
            _with(TUNING_JOB, "HyperParameterTuningJobConfig.Strategy", "Bayesian"),
            "HyperParameterTuningJobConfig.StrategyConfig",
            {"HyperbandStrategyConfig": {"MaxResource": 10}},
        ),
        _with(TUNING_JOB, "HyperParameterTuningJobConfig.Strategy", "Bayesian"),
    ),
    "serverless_no_instance_fields": (
        "sagemaker",
        "CreateEndpointConfig",
        _config({**SERVERLESS, "ContainerStartupHealthCheckTimeoutInSeconds": 600}),
        _config(SERVERLESS),
    ),
    "instance_variant_type_and_count": (
        "sagemaker",
        "CreateEndpointConfig",
        _config({k: v for k, v in VARIANT.items() if k != "InitialInstanceCount"}),
        _config(VARIANT),
    ),
    "serverless_provisioned_at_most_max": (
        "sagemaker",
        "CreateEndpointConfig",
        _config(_with(SERVERLESS, "ServerlessConfig.ProvisionedConcurrency", 6)),
        _config(_with(SERVERLESS, "ServerlessConfig.ProvisionedConcurrency", 5)),
    ),
    "serverless_memory_steps": (
        "sagemaker",
        "CreateEndpointConfig",
        _config(_with(SERVERLESS, "ServerlessConfig.MemorySizeInMB", 1500)),
        _config(SERVERLESS),
    ),
    "serverless_feature_exclusions": (
        "sagemaker",
        "CreateEndpointConfig",
        _config(SERVERLESS, AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://b/o"}}),
        _config(SERVERLESS),
    ),
    "deployment_one_policy": (
        "sagemaker",
        "UpdateEndpoint",
        _update(DeploymentConfig={"BlueGreenUpdatePolicy": BLUE_GREEN, "RollingUpdatePolicy": ROLLING}),
        _update(DeploymentConfig={"RollingUpdatePolicy": ROLLING}),
    ),
    "traffic_routing_sizes": (
        "sagemaker",
        "UpdateEndpoint",
        _update(
            DeploymentConfig={
                "BlueGreenUpdatePolicy": _with(BLUE_GREEN, "TrafficRoutingConfiguration.CanarySize.Value", 60)
            }
        ),
        _update(DeploymentConfig={"BlueGreenUpdatePolicy": BLUE_GREEN}),
    ),
    "rolling_batch_size": (
        "sagemaker",
        "UpdateEndpoint",
        _update(DeploymentConfig={"RollingUpdatePolicy": _with(ROLLING, "MaximumBatchSize.Value", 80)}),
        _update(DeploymentConfig={"RollingUpdatePolicy": ROLLING}),
    ),
    "blue_green_timeout": (
        "sagemaker",
        "UpdateEndpoint",
        _update(
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    **BLUE_GREEN,
                    "TerminationWaitInSeconds": 600,
                    "MaximumExecutionTimeoutInSeconds": 900,
                }
            }
        ),
        _update(
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    **BLUE_GREEN,
                    "TerminationWaitInSeconds": 600,
                    "MaximumExecutionTimeoutInSeconds": 1800,
                }
            }
        ),
    ),
    "exclude_needs_retain": (
        "sagemaker",
        "UpdateEndpoint",
        _update(ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DesiredWeight"}]),
        _update(
            RetainAllVariantProperties=True, ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DesiredWeight"}]
        ),
    ),
    "min_at_most_max": (
        "application-autoscaling",
        "RegisterScalableTarget",
        {**TARGET, "MinCapacity": 3, "MaxCapacity": 2},
        {**TARGET, "MinCapacity": 2, "MaxCapacity": 2},
    ),
    "policy_configuration": (
        "application-autoscaling",
        "PutScalingPolicy",
        POLICY,
        {**POLICY, "TargetTrackingScalingPolicyConfiguration": TRACKING},
    ),
    "statistic_or_extended": (
        "cloudwatch",
        "PutMetricAlarm",
        {**ALARM, "ExtendedStatistic": "p99"},
        _with(ALARM, "Statistic", None) | {"ExtendedStatistic": "p99"},
    ),
    "alarm_period": ("cloudwatch", "PutMetricAlarm", {**ALARM, "Period": 90}, {**ALARM, "Period": 30}),
    "metrics_exclusive": (
        "cloudwatch",
        "PutMetricAlarm",
        {**ALARM, "Metrics": [{"Id": "e", "Expression": "m1*2", "ReturnData": True}]},
        {
            **{k: v for k, v in ALARM.items() if k not in ("MetricName", "Namespace", "Period", "Statistic")},
            "Metrics": [{"Id": "e", "Expression": "m1*2", "ReturnData": True}],
        },
    ),
    "datapoints_within_periods": (
        "cloudwatch",
        "PutMetricAlarm",
        {**ALARM, "DatapointsToAlarm": 4},
        {**ALARM, "DatapointsToAlarm": 3},
    ),
    "transform_payload_budget": (
        "sagemaker",
        "CreateTransformJob",
        {**TRANSFORM, "MaxConcurrentTransforms": 4, "MaxPayloadInMB": 30},
        {**TRANSFORM, "MaxConcurrentTransforms": 4, "MaxPayloadInMB": 25},
    ),
    "url_auth_type_only_for_url": (
        "lambda",
        "AddPermission",
        {**PERMISSION, "Action": "lambda:InvokeFunction", "FunctionUrlAuthType": "NONE"},
        {**PERMISSION, "Action": "lambda:InvokeFunctionUrl", "FunctionUrlAuthType": "NONE"},
    ),
    "invoked_via_url_only_for_invoke": (
        "lambda",
        "AddPermission",
        {**PERMISSION, "Action": "lambda:InvokeFunctionUrl", "InvokedViaFunctionUrl": True},
        {**PERMISSION, "Action": "lambda:InvokeFunction", "InvokedViaFunctionUrl": True},
    ),
    "min_count_at_most_max": (
        "ec2",
        "RunInstances",
        {"ImageId": "ami-1", "MinCount": 2, "MaxCount": 1},
        {"ImageId": "ami-1", "MinCount": 1, "MaxCount": 1},
    ),
    **{
        f"{prefix}{name}": ("sagemaker", operation, _schedule(operation, path, value), _schedule(operation))
        for operation, prefix in (("CreateMonitoringSchedule", ""), ("UpdateMonitoringSchedule", "update_"))
        for name, path, value in (
            ("one_job_definition", "MonitoringJobDefinitionName", "dogs-job"),
            ("schedule_expression_form", "ScheduleConfig.ScheduleExpression", "rate(1 hour)"),
            ("runtime_within_frequency", "MonitoringJobDefinition.StoppingCondition.MaxRuntimeInSeconds", 7200),
        )
    },
    "bucket_key_only_with_kms": (
        "s3",
        "PutBucketEncryption",
        _bucket_encryption({"SSEAlgorithm": "AES256", "KMSMasterKeyID": "alias/data"}),
        _bucket_encryption({"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/data"}),
    ),
    "bucket_policy_size": (
        "s3",
        "PutBucketPolicy",
        {"Bucket": "b", "Policy": json.dumps({"Statement": [{"Sid": "x" * (20 * 1024)}]})},
        {"Bucket": "b", "Policy": json.dumps({"Statement": [{"Sid": "x" * 100}]})},
    ),
    "repository_key_only_with_kms": (
        "ecr",
        "CreateRepository",
        {"repositoryName": "r", "encryptionConfiguration": {"encryptionType": "AES256", "kmsKey": "alias/images"}},
        {"repositoryName": "r", "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "alias/images"}},
    ),
    "exclusion_filters_with_exclusion_mutability": (
        "ecr",
        "CreateRepository",
        {"repositoryName": "r", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"},
        {"repositoryName": "r", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION", **LATEST_EXCLUDED},
    ),
    "tag_mutability_exclusion_filters": (
        "ecr",
        "PutImageTagMutability",
        {"repositoryName": "r", "imageTagMutability": "IMMUTABLE", **LATEST_EXCLUDED},
        {"repositoryName": "r", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION", **LATEST_EXCLUDED},
    ),
    # the security profile's fields (byoc.aws.security)
    "training_vpc_ids": (
        "sagemaker",
        "CreateTrainingJob",
        {**TRAINING_JOB, "VpcConfig": {"Subnets": ["private-a"], "SecurityGroupIds": ["sg-0123abcd"]}},
        {**TRAINING_JOB, "VpcConfig": {"Subnets": ["subnet-0123abcd"], "SecurityGroupIds": ["sg-0123abcd"]}},
    ),
    "tuning_vpc_ids": (
        "sagemaker",
        "CreateHyperParameterTuningJob",
        {**TUNING_JOB, "TrainingJobDefinition": {**TUNING_JOB["TrainingJobDefinition"], "VpcConfig": VPC_BAD_GROUP}},
        {**TUNING_JOB, "TrainingJobDefinition": {**TUNING_JOB["TrainingJobDefinition"], "VpcConfig": VPC_GOOD}},
    ),
    "model_vpc_ids": (
        "sagemaker",
        "CreateModel",
        {**model(), "VpcConfig": VPC_BAD_GROUP},
        {**model(), "VpcConfig": VPC_GOOD},
    ),
    "training_volume_key": (
        "sagemaker",
        "CreateTrainingJob",
        {**TRAINING_JOB, "ResourceConfig": {**TRAINING_JOB["ResourceConfig"], "VolumeKmsKeyId": "alias/mine"}},
        {**TRAINING_JOB, "ResourceConfig": {**TRAINING_JOB["ResourceConfig"], "VolumeKmsKeyId": KEY_ARN}},
    ),
    "tuning_volume_key": (
        "sagemaker",
        "CreateHyperParameterTuningJob",
        {**TUNING_JOB, "TrainingJobDefinition": {**TUNING_JOB["TrainingJobDefinition"], "ResourceConfig": G4DN_KEY}},
        {
            **TUNING_JOB,
            "TrainingJobDefinition": {
                **TUNING_JOB["TrainingJobDefinition"],
                "ResourceConfig": {**G4DN_KEY, "InstanceType": "ml.m5.xlarge"},
            },
        },
    ),
    "transform_volume_key": (
        "sagemaker",
        "CreateTransformJob",
        {
            **TRANSFORM,
            "TransformResources": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeKmsKeyId": KEY_ARN},
        },
        {
            **TRANSFORM,
            "TransformResources": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeKmsKeyId": KEY_ARN},
        },
    ),
    "endpoint_key_local_storage": (
        "sagemaker",
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [{**VARIANT, "InstanceType": "ml.g5.xlarge"}],
            "KmsKeyId": KEY_ARN,
        },
        {"EndpointConfigName": "c", "ProductionVariants": [VARIANT], "KmsKeyId": KEY_ARN},
    ),
    "alias_not_aws": (
        "kms",
        "CreateAlias",
        {"AliasName": "alias/aws/mine", "TargetKeyId": "k"},
        {"AliasName": "alias/byoc/mine", "TargetKeyId": "k"},
    ),
    "key_deletion_window": (
        "kms",
        "ScheduleKeyDeletion",
        {"KeyId": "k", "PendingWindowInDays": 3},
        {"KeyId": "k", "PendingWindowInDays": 30},
    ),
    "interface_owns_network": (
        "ec2",
        "RunInstances",
        {"ImageId": "ami-1", "MinCount": 1, "MaxCount": 1, "SubnetId": "subnet-1", "NetworkInterfaces": [INTERFACE]},
        {"ImageId": "ami-1", "MinCount": 1, "MaxCount": 1, "NetworkInterfaces": [INTERFACE]},
    ),
    "ebs_key_needs_encrypted": (
        "ec2",
        "RunInstances",
        {
            "ImageId": "ami-1",
            "MinCount": 1,
            "MaxCount": 1,
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"KmsKeyId": KEY_ARN}}],
        },
        {
            "ImageId": "ami-1",
            "MinCount": 1,
            "MaxCount": 1,
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"KmsKeyId": KEY_ARN, "Encrypted": True}}],
        },
    ),
}
CROSS_CALL = {"min_zero_only_async"}  # tested below, with the calls it spans


def test_every_rule_has_a_case():
    assert {rule.name for rule in aws_rules.RULES} == set(CASES) | CROSS_CALL


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule(name):
    service, operation, breaking, keeping = CASES[name]
    (rule,) = [r for r in aws_rules.RULES if r.name == name]
    assert rule.operation == operation and rule.source.startswith("https://docs.aws.amazon.com/")
    found = validator.findings(client(service), operation, breaking)
    assert found, f"{name}: the breaking request passed"
    assert all(rule.source in f.problem for f in found), found  # the message cites where the rule is stated
    assert validator.findings(client(service), operation, keeping) == []


def test_rule_min_zero_only_async_spans_the_endpoint_calls():
    """MinCapacity 0 is refused for an endpoint this process created on a real-time config, kept for one on an
    asynchronous config, and left to AWS for an endpoint it knows nothing of."""
    sm, aas = client("sagemaker"), client("application-autoscaling")
    zero = {**TARGET, "MinCapacity": 0, "MaxCapacity": 2}
    assert validator.findings(aas, "RegisterScalableTarget", zero) == []  # unknown endpoint
    validator.findings(sm, "CreateEndpointConfig", _config(VARIANT))
    validator.findings(sm, "CreateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c"})
    (found,) = validator.findings(aas, "RegisterScalableTarget", zero)
    assert found.path == "MinCapacity" and "async-inference-autoscale" in found.problem
    async_config = _config(VARIANT, AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://b/o"}})
    validator.findings(sm, "CreateEndpointConfig", {**async_config, "EndpointConfigName": "c-async"})
    validator.findings(sm, "UpdateEndpoint", _update(EndpointConfigName="c-async"))
    assert validator.findings(aas, "RegisterScalableTarget", zero) == []


def test_rule_public_function_url_needs_both_statements(aws_refusals):
    """A public Function URL needs lambda:InvokeFunctionUrl (FunctionUrlAuthType NONE) and lambda:InvokeFunction
    (InvokedViaFunctionUrl) for Principal *: one without the other is unfinished, and so is removing one."""
    lam = client("lambda")
    url = {
        **PERMISSION,
        "Principal": "*",
        "Qualifier": "live",
        "StatementId": "url",
        "Action": "lambda:InvokeFunctionUrl",
    }
    validator.findings(lam, "AddPermission", {**url, "FunctionUrlAuthType": "NONE"})
    (found,) = validator.unfinished()
    assert found.path == "f:live" and "not lambda:InvokeFunction" in found.problem
    assert aws_refusals.take() == [found]
    invoke = {**url, "StatementId": "invoke", "Action": "lambda:InvokeFunction", "InvokedViaFunctionUrl": True}
    validator.findings(lam, "AddPermission", invoke)
    assert validator.unfinished() == []
    validator.findings(lam, "RemovePermission", {"FunctionName": "f", "Qualifier": "live", "StatementId": "url"})
    assert [f.path for f in validator.unfinished()] == ["f:live"]
    aws_refusals.take()
    validator.findings(lam, "RemovePermission", {"FunctionName": "f", "Qualifier": "live", "StatementId": "invoke"})
    assert validator.unfinished() == []


def test_a_stubber_client_made_by_a_test_is_checked(aws_refusals):
    """tests/aws_requests.py installs the hook on every client, and Stubber's own before-parameter-build
    handler (registered first) does not keep ours from running."""
    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    request = {
        "EndpointConfigName": "c",
        "ProductionVariants": [{**VARIANT, "ContainerStartupHealthCheckTimeoutInSeconds": 5000}],
    }
    with Stubber(sm) as stub:
        stub.add_response(
            "create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"}, request
        )
        with pytest.raises(validator.RequestRefused, match="ContainerStartupHealthCheckTimeoutInSeconds: 5000 is over"):
            sm.create_endpoint_config(**request)
    (found,) = aws_refusals.take()
    assert found.operation == "CreateEndpointConfig"


@pytest.mark.parametrize(
    ("timeout", "problem"),
    [
        ("5000", "ContainerStartupHealthCheckTimeoutInSeconds: 5000 is over the maximum 3600"),
        # botocore's own minimum, which it checks only when the config is sent, after the model exists
        (
            "10",
            "Invalid value for parameter ProductionVariants[0].ContainerStartupHealthCheckTimeoutInSeconds, "
            "value: 10, valid min value: 60",
        ),
    ],
)
def test_cli_refuses_an_out_of_range_flag_before_creating_anything(aws, capsys, aws_refusals, timeout, problem):
    """`byoc deploy --startup-timeout` over the model's maximum or under its minimum: one line, exit 2, and no
    model left behind in moto."""
    from byoc.cli import main

    seed_account(models=["s3://bucket/model.tar.gz"])  # pre-flight passes: the refusal is the validator's
    models = boto3.client("sagemaker").list_models()["Models"]
    code = main(
        [
            "deploy",
            "--name",
            "val1",
            "--image",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-serve:latest",
            "--model-data",
            "s3://bucket/model.tar.gz",
            "--role",
            ROLE,
            "--startup-timeout",
            timeout,
            "--no-wait",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and problem in lines[0]
    assert boto3.client("sagemaker").list_models()["Models"] == models
    assert len(aws_refusals.take()) == 1


SWALLOWED = """
import boto3
import pytest
from botocore.stub import Stubber

from byoc.aws import validator

def _refused():
    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(sm) as stub:
        stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"})
        try:
            sm.create_model(ModelName="a" * 64, ExecutionRoleArn="arn:aws:iam::123456789012:role/r")
        except validator.RequestRefused:
            pass  # product code that swallows the refusal

def test_swallowed(aws_refusals):
    _refused()

def test_expected(aws_refusals):
    _refused()
    assert len(aws_refusals.take()) == 1
"""


def test_a_refusal_the_code_swallows_still_fails_the_test(tmp_path):
    """The suite's hook fails a test at teardown for a finding the code under test caught, unless the test
    took it as expected."""
    (tmp_path / "test_swallowed.py").write_text(textwrap.dedent(SWALLOWED))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.aws_requests",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # pytest counts the failed teardown as an error besides the call that passed
    assert proc.returncode == 1 and "2 passed, 1 error" in proc.stdout, proc.stdout + proc.stderr
    assert "ERROR at teardown of test_swallowed" in proc.stdout
    assert "AWS would refuse CreateModel: ModelName: 64 characters" in proc.stdout


def test_lambda_deploy_refuses_an_out_of_range_memory_before_creating_anything(aws, capsys, aws_refusals, tmp_path):
    """MemorySize over the service model's maximum: no log group, role or function is left behind."""
    from byoc.cli import main

    seed_account(endpoints=["val2"])  # pre-flight passes: the refusal is the validator's
    (tmp_path / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return {}\n")
    argv = ["lambda-deploy", "--name", "val2", "--function", "val2-fn", "--source", str(tmp_path)]
    code = main([*argv, "--reserved-concurrency", "5", "--function-memory", "40000"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().startswith("error: AWS would refuse CreateFunction: MemorySize: 40000 is over"), (
        err
    )
    assert boto3.client("lambda").list_functions()["Functions"] == []
    assert boto3.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/val2")["logGroups"] == []
    assert not [r for r in boto3.client("iam").list_roles()["Roles"] if "val2" in r["RoleName"]]
    assert [f.path for f in aws_refusals.take()] == ["MemorySize"]


def test_batch_transform_refuses_a_payload_budget_over_100_mb_before_creating_the_model(aws, capsys, aws_refusals):
    """MaxConcurrentTransforms x MaxPayloadInMB is at most 100 MB: the model is not created either."""
    from byoc.cli import main

    seed_account(models=["s3://val-data/val3/model.tar.gz"], data=["s3://val-data/in"])  # pre-flight passes
    models = boto3.client("sagemaker").list_models()["Models"]  # the seeded endpoints' (a module's moto_server)
    argv = ["batch-transform", "--name", "val3", "--model-data", "s3://val-data/val3/model.tar.gz", "--role", ROLE]
    argv += ["--input", "s3://val-data/in/", "--output", "s3://val-data/out/", "--concurrency", "4"]
    argv += ["--max-payload-mb", "30"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "MaxConcurrentTransforms: 4 x MaxPayloadInMB 30 is over 100 MB" in err, err
    assert boto3.client("sagemaker").list_models()["Models"] == models
    assert [f.path for f in aws_refusals.take()] == ["MaxConcurrentTransforms"]
