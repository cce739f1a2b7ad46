"""The CloudWatch alarms deploy and lambda-deploy create, against moto_server (CloudWatch, SNS): what
they watch, whom they tell, `byoc status` showing their states, `byoc teardown` removing them and
the SNS topic --alarm-email made."""

from __future__ import annotations

import boto3
import pytest

from byoc.cli import main
from tests.awsutil import ROLE, byoc, seed_account

TOPIC = "arn:aws:sns:us-east-1:123456789012:ops-pager"


def deploy_args(name: str, *extra: str) -> tuple[str, ...]:
    return ("deploy", "--name", name, "--model-data", model_data(name), "--role", ROLE, "--poll", "0.01", *extra)


def model_data(name: str) -> str:
    return f"s3://byoc-alarms/{name}/model.tar.gz"


def alarms_of(prefix: str) -> dict[str, dict]:
    return {
        a["AlarmName"]: a for a in boto3.client("cloudwatch").describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]
    }


def test_deploy_creates_the_endpoint_alarms_and_an_email_topic(aws, capsys):
    seed_account(models=[model_data("al1")])
    out = byoc(capsys, *deploy_args("al1", "--latency-alarm-ms", "250", "--alarm-email", "ops@example.com"))
    sns = boto3.client("sns")
    [topic] = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(":byoc-al1-alarms")]
    assert {"Key": "byoc:name", "Value": "al1"} in sns.list_tags_for_resource(ResourceArn=topic)["Tags"]
    [subscription] = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("email", "ops@example.com")
    assert "subscribed ops@example.com to SNS topic" in out and "confirm the subscription" in out
    found = alarms_of("byoc-al1-")
    assert sorted(found) == ["byoc-al1-5xx-errors", "byoc-al1-cpu", "byoc-al1-memory", "byoc-al1-model-latency-p99"]
    variant = [{"Name": "EndpointName", "Value": "al1"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    errors, latency = found["byoc-al1-5xx-errors"], found["byoc-al1-model-latency-p99"]
    assert (errors["Namespace"], errors["MetricName"], errors["Statistic"], errors["Threshold"]) == (
        "AWS/SageMaker",
        "Invocation5XXErrors",
        "Average",
        0.05,
    )
    # ModelLatency is in microseconds: --latency-alarm-ms 250 is 250,000
    assert (latency["MetricName"], latency["ExtendedStatistic"], latency["Threshold"]) == (
        "ModelLatency",
        "p99",
        250000,
    )
    cpu = found["byoc-al1-cpu"]
    assert (cpu["Namespace"], cpu["MetricName"], cpu["Threshold"]) == (
        "/aws/sagemaker/Endpoints",
        "CPUUtilization",
        180,
    )
    for alarm in found.values():
        assert alarm["Dimensions"] == variant and alarm["AlarmActions"] == [topic]
        assert alarm["TreatMissingData"] == "notBreaching"

    out = byoc(capsys, *deploy_args("al1", "--latency-alarm-ms", "250"))  # again, no flag: still told
    assert all(a["AlarmActions"] == [topic] for a in alarms_of("byoc-al1-").values())
    assert len(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]) == 1


def test_an_async_endpoint_gets_a_queue_age_alarm(aws, capsys):
    seed_account(models=[model_data("al2")])
    byoc(capsys, *deploy_args("al2", "--async", "--async-output", "s3://byoc-alarms/al2/out/", "--alarm-topic", TOPIC))
    age = alarms_of("byoc-al2-")["byoc-al2-queue-age"]
    assert (age["MetricName"], age["Dimensions"], age["AlarmActions"]) == (
        "ApproximateAgeOfOldestRequest",
        [{"Name": "EndpointName", "Value": "al2"}],
        [TOPIC],
    )


def test_status_shows_the_alarm_states_and_teardown_removes_them_and_the_topic(aws, capsys):
    seed_account(models=[model_data("al3")])
    byoc(capsys, *deploy_args("al3", "--alarm-email", "ops@example.com"))
    cw = boto3.client("cloudwatch")
    cw.set_alarm_state(AlarmName="byoc-al3-5xx-errors", StateValue="ALARM", StateReason="test")
    out = byoc(capsys, "status", "--name", "al3")
    states = {name: a["StateValue"] for name, a in alarms_of("byoc-al3-").items()}
    assert states["byoc-al3-5xx-errors"] == "ALARM"
    for name, state in states.items():
        assert f"CloudWatch alarm {name}: {state} (" in out
    assert "CloudWatch alarm byoc-al3-5xx-errors: ALARM (Average Invocation5XXErrors > 0.05; tells arn:aws:sns" in out

    out = byoc(capsys, "teardown", "--name", "al3", "--poll", "0.01")
    assert "deleting CloudWatch alarm byoc-al3-5xx-errors" in out and "deleting SNS topic" in out
    assert alarms_of("byoc-al3-") == {}
    assert not [t for t in boto3.client("sns").list_topics()["Topics"] if t["TopicArn"].endswith(":byoc-al3-alarms")]


def test_lambda_deploy_creates_errors_and_throttles_alarms(aws, capsys, tmp_path):
    seed_account(models=[model_data("al4")])
    byoc(capsys, *deploy_args("al4"))  # the endpoint the function calls
    source = tmp_path / "lambda"
    source.mkdir()
    (source / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return {}\n")
    args = ("lambda-deploy", "--name", "al4", "--function", "al4-fn", "--source", str(source))
    byoc(capsys, *args, "--reserved-concurrency", "5", "--poll", "0.01", "--alarm-topic", TOPIC)
    found = alarms_of("byoc-al4-lambda-")
    assert sorted(found) == ["byoc-al4-lambda-al4-fn-errors", "byoc-al4-lambda-al4-fn-throttles"]
    for alarm, metric in zip(sorted(found), ("Errors", "Throttles"), strict=True):
        assert (found[alarm]["Namespace"], found[alarm]["MetricName"], found[alarm]["Statistic"]) == (
            "AWS/Lambda",
            metric,
            "Sum",
        )
        assert found[alarm]["Dimensions"] == [{"Name": "FunctionName", "Value": "al4-fn"}]
        assert found[alarm]["AlarmActions"] == [TOPIC]
    byoc(capsys, "teardown", "--name", "al4", "--poll", "0.01")
    assert alarms_of("byoc-al4-") == {}


def test_bad_alarm_options_and_foreign_alarms_are_refused(aws, capsys):
    seed_account(models=[model_data("al5"), model_data("al6")])
    usage = [
        (("--alarm-email", "not-an-address"), "--alarm-email must be an email address, got 'not-an-address'"),
        (("--alarm-topic", "ops"), "--alarm-topic must be an SNS topic ARN"),
        (("--alarm-topic", TOPIC, "--alarm-email", "a@b.io"), "not allowed with argument"),
    ]
    for extra, message in usage:  # usage errors: exit 2 before any call
        with pytest.raises(SystemExit) as exited:
            main(list(deploy_args("al5", *extra)))
        assert exited.value.code == 2 and message in capsys.readouterr().err, extra
    assert main(list(deploy_args("al5", "--latency-alarm-ms", "0"))) == 1
    assert "--latency-alarm-ms must be > 0" in capsys.readouterr().err
    boto3.client("cloudwatch").put_metric_alarm(
        AlarmName="byoc-al6-cpu",
        MetricName="CPUUtilization",
        Namespace="/aws/sagemaker/Endpoints",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    assert main(list(deploy_args("al6"))) == 1
    assert "CloudWatch alarm byoc-al6-cpu exists but was not created by byoc" in capsys.readouterr().err
