"""CloudWatch alarms on what byoc deploys: they tell you (optionally through SNS) and roll updates back.

Per endpoint NAME (`byoc deploy`): server errors (Invocation5XXErrors), p99 ModelLatency over a
threshold, CPU and memory for instance-backed endpoints, the age of the oldest queued request for
asynchronous ones. Per monitoring schedule (`byoc monitor schedule`): the drift measures its
monitoring jobs publish (class distribution, low-confidence share). Per Lambda function
(`byoc lambda-deploy`): Errors and Throttles. Each is named byoc-NAME-..., tagged byoc:name=NAME;
the endpoint's are the rollback alarms of its updates
(`byoc.aws.rollout`). `--alarm-topic ARN` notifies an SNS topic; `--alarm-email ADDR` creates the
topic byoc-NAME-alarms (tagged, removed by teardown) and subscribes the address.

Metrics: https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html
(AWS/SageMaker invocation metrics, /aws/sagemaker/Endpoints instance metrics, async queue metrics);
https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html (AWS/Lambda).
The alarm request: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from byoc.aws.endpoint import SNS_ARN, VARIANT, Kind
from byoc.aws.session import Aws, AwsError, owned, paginate, say, tags_list
from byoc.core.errors import ConfigError

INVOCATION_METRICS = "AWS/SageMaker"
INSTANCE_METRICS = "/aws/sagemaker/Endpoints"  # CPU, memory, disk of the endpoint's instances
LAMBDA_METRICS = "AWS/Lambda"
DEFAULT_LATENCY_MS = 1000.0  # p99 ModelLatency; a CPU classifier answers in tens of milliseconds
ERROR_RATE = 0.05  # Invocation5XXErrors' Average is the share of requests that got a 5xx
UTILIZATION = 90.0  # percent of memory, and of each vCPU (CPUUtilization adds up all cores)
QUEUE_AGE_SECONDS = 1800.0  # an asynchronous request waiting half an hour means no instance takes it
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class Notify:
    """Alarm options of deploy and lambda-deploy: the latency threshold and whom the alarms tell."""

    latency_ms: float = DEFAULT_LATENCY_MS
    topic: str | None = None  # an existing SNS topic ARN
    email: str | None = None  # subscribe this address to byoc-NAME-alarms (created)

    def __post_init__(self) -> None:
        if self.latency_ms <= 0:
            raise ConfigError(f"--latency-alarm-ms must be > 0, got {self.latency_ms:g}")
        if self.topic and self.email:
            raise ConfigError("--alarm-topic and --alarm-email: pick one (the email gets a topic of its own)")
        if self.topic:
            check_topic(self.topic)
        if self.email:
            check_email(self.email)


def check_topic(arn: str) -> str:
    if not SNS_ARN.match(arn):
        raise ConfigError(f"--alarm-topic must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC), got {arn!r}")
    return arn


def check_email(address: str) -> str:
    if not EMAIL.match(address):
        raise ConfigError(f"--alarm-email must be an email address, got {address!r}")
    return address


def alarm_name(name: str, what: str) -> str:
    return f"byoc-{name}-{what}"


def topic_name(name: str) -> str:
    return f"byoc-{name}-alarms"


def vcpus(instance_type: str) -> int:
    """vCPUs of an ml.* instance type from its size: large 2, xlarge 4, Nxlarge 4N (the m, c, r, g
    families byoc deploys on); 1 for any other size, which only makes the CPU alarm stricter."""
    size = instance_type.rsplit(".", 1)[-1]
    if size == "large":
        return 2
    match = re.fullmatch(r"(\d*)xlarge", size)
    return 4 * int(match[1] or 1) if match else 1


def endpoint_alarms(name: str, kind: Kind, instance_type: str | None, latency_ms: float) -> list[dict]:
    """The PutMetricAlarm requests (less actions and tags) for endpoint NAME of this kind."""
    variant = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": VARIANT}]
    alarms = [
        _alarm(
            alarm_name(name, "5xx-errors"),
            INVOCATION_METRICS,
            "Invocation5XXErrors",
            variant,
            ERROR_RATE,
            f"more than {ERROR_RATE:.0%} of requests to endpoint {name} got a server error",
            statistic="Average",
        ),
        _alarm(
            alarm_name(name, "model-latency-p99"),
            INVOCATION_METRICS,
            "ModelLatency",
            variant,
            latency_ms * 1000,
            f"endpoint {name}'s p99 model latency is over {latency_ms:g} ms",
            extended="p99",
        ),
    ]
    if kind is not Kind.SERVERLESS and instance_type:
        cores = vcpus(instance_type)
        alarms += [
            _alarm(
                alarm_name(name, "cpu"),
                INSTANCE_METRICS,
                "CPUUtilization",
                variant,
                UTILIZATION * cores,
                f"endpoint {name}'s instances use over {UTILIZATION:g} % of their {cores} vCPUs",
                periods=5,
                statistic="Average",
            ),
            _alarm(
                alarm_name(name, "memory"),
                INSTANCE_METRICS,
                "MemoryUtilization",
                variant,
                UTILIZATION,
                f"endpoint {name}'s instances use over {UTILIZATION:g} % of their memory",
                periods=5,
                statistic="Average",
            ),
        ]
    if kind is Kind.ASYNC:
        alarms.append(
            _alarm(
                alarm_name(name, "queue-age"),
                INVOCATION_METRICS,
                "ApproximateAgeOfOldestRequest",
                [{"Name": "EndpointName", "Value": name}],
                QUEUE_AGE_SECONDS,
                f"a request to endpoint {name} has waited over {QUEUE_AGE_SECONDS:g} s in the queue",
                periods=5,
                statistic="Maximum",
            )
        )
    return alarms


ENDPOINT_ALARMS = ("5xx-errors", "model-latency-p99", "cpu", "memory", "queue-age")  # what endpoint_alarms names


def drift_alarms(name: str, schedule: str, period: int) -> list[dict]:
    """The PutMetricAlarm requests (less actions and tags) on the drift metrics schedule SCHEDULE's
    monitoring jobs publish for endpoint NAME, one datapoint per run (every `period` seconds). Not
    rollback alarms: drift is the data's, measured hours after an update."""
    from byoc.aws import monitoring  # the metric names are the monitoring contract's

    dims = [
        {"Name": monitoring.ENDPOINT_DIMENSION, "Value": name},
        {"Name": monitoring.SCHEDULE_DIMENSION, "Value": schedule},
    ]
    watched = (
        (
            "drift-class-distribution",
            monitoring.CLASS_DRIFT_METRIC,
            monitoring.CLASS_DRIFT_ALARM,
            "the predicted classes drift from the baseline (PSI)",
        ),
        (
            "drift-low-confidence",
            monitoring.LOW_CONFIDENCE_METRIC,
            monitoring.LOW_CONFIDENCE_ALARM,
            "the share of low-confidence answers is high",
        ),
    )
    return [
        {
            **_alarm(
                alarm_name(name, what),
                monitoring.METRIC_NAMESPACE,
                metric,
                dims,
                threshold,
                f"endpoint {name}: {text}, over {threshold:g}",
                statistic="Maximum",
                periods=1,
            ),
            "Period": period,
        }
        for what, metric, threshold, text in watched
    ]


def owned_endpoint_alarms(aws: Aws, name: str) -> list[str]:
    """The endpoint alarms byoc made for NAME that exist now."""
    cw = aws.client("cloudwatch")
    wanted = [alarm_name(name, what) for what in ENDPOINT_ALARMS]
    found = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=wanted)["MetricAlarms"]}
    return [
        n
        for n in wanted
        if n in found and owned(cw.list_tags_for_resource(ResourceARN=found[n]["AlarmArn"]).get("Tags"), name)
    ]


def function_alarms(name: str, function: str) -> list[dict]:
    """The PutMetricAlarm requests (less actions and tags) for Lambda function FUNCTION of NAME."""
    dims = [{"Name": "FunctionName", "Value": function}]
    return [
        _alarm(
            alarm_name(name, f"lambda-{function}-{metric.lower()}"),
            LAMBDA_METRICS,
            metric,
            dims,
            1.0,
            f"Lambda {function}: {what}",
            comparison="GreaterThanOrEqualToThreshold",
        )
        for metric, what in (("Errors", "invocations failed"), ("Throttles", "invocations were throttled"))
    ]


def _alarm(
    alarm: str,
    namespace: str,
    metric: str,
    dimensions: list[dict],
    threshold: float,
    description: str,
    statistic: str = "Sum",
    extended: str | None = None,
    periods: int = 2,
    comparison: str = "GreaterThanThreshold",
) -> dict:
    stat = {"ExtendedStatistic": extended} if extended else {"Statistic": statistic}
    return {
        "AlarmName": alarm,
        "AlarmDescription": f"byoc: {description}",
        "Namespace": namespace,
        "MetricName": metric,
        "Dimensions": dimensions,
        **stat,
        "Period": 60,
        "EvaluationPeriods": periods,
        "Threshold": float(threshold),
        "ComparisonOperator": comparison,
        # no traffic is no trouble: an idle endpoint stays OK (and does not hold up a rollout)
        "TreatMissingData": "notBreaching",
    }


def ensure(aws: Aws, name: str, requests: list[dict], notify: Notify) -> list[str]:
    """Create or update the alarms (refusing to touch one byoc did not make for NAME); their names."""
    cw = aws.client("cloudwatch")
    existing = check_ours(aws, name, requests)
    topic = notification_topic(aws, name, notify)
    for request in requests:
        found = existing.get(request["AlarmName"])
        # without a topic this time, the alarm keeps whom it told before
        actions = [topic] if topic else (found or {}).get("AlarmActions", [])
        cw.put_metric_alarm(**request, AlarmActions=actions, Tags=tags_list(name))
    say(
        f"CloudWatch alarms for {name}: {', '.join(r['AlarmName'] for r in requests)}"
        + (f" (notifying {topic})" if topic else "")
    )
    return [r["AlarmName"] for r in requests]


def check_ours(aws: Aws, name: str, requests: list[dict]) -> dict[str, dict]:
    """The alarms of these requests that exist, by name; AwsError when one was not made by byoc for NAME."""
    cw = aws.client("cloudwatch")
    names = [r["AlarmName"] for r in requests]
    existing = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    for alarm in existing.values():
        if not owned(cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"]).get("Tags"), name):
            raise AwsError(f"CloudWatch alarm {alarm['AlarmName']} exists but was not created by byoc; not changing it")
    return existing


def notification_topic(aws: Aws, name: str, notify: Notify) -> str | None:
    """The SNS topic the alarms notify: --alarm-topic, or byoc-NAME-alarms with --alarm-email subscribed."""
    if not notify.email:
        return notify.topic
    sns = aws.client("sns")
    # CreateTopic returns the existing topic's ARN when the name and attributes match
    arn = sns.create_topic(Name=topic_name(name), Tags=tags_list(name))["TopicArn"]
    subscribed = paginate(sns, "list_subscriptions_by_topic", "Subscriptions", TopicArn=arn)
    if any(s.get("Endpoint") == notify.email for s in subscribed):
        return arn
    sns.subscribe(TopicArn=arn, Protocol="email", Endpoint=notify.email)
    say(f"subscribed {notify.email} to SNS topic {arn}: confirm the subscription in the email AWS sends")
    return arn


def owned_topics(aws: Aws, name: str) -> list[str]:
    """The SNS topic byoc-NAME-alarms, when `--alarm-email` created it for NAME."""
    sns = aws.client("sns")
    return [
        t["TopicArn"]
        for t in paginate(sns, "list_topics", "Topics")
        if t["TopicArn"].rsplit(":", 1)[-1] == topic_name(name)
        and owned(sns.list_tags_for_resource(ResourceArn=t["TopicArn"]).get("Tags"), name)
    ]


def missing(aws: Aws, names: list[str]) -> list[str]:
    """Which of these alarm names CloudWatch does not have."""
    found = {a["AlarmName"] for a in aws.client("cloudwatch").describe_alarms(AlarmNames=names)["MetricAlarms"]}
    return [n for n in names if n not in found]


def line(alarm: dict) -> str:
    """One line for `byoc status`: the alarm, its state, what it watches and what it starts or tells."""
    comparison = {"GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">="}.get(
        alarm.get("ComparisonOperator", ""), alarm.get("ComparisonOperator", "?")
    )
    watched = f"{alarm.get('MetricName')} {comparison} {alarm.get('Threshold', 0):g}"
    actions = alarm.get("AlarmActions", [])
    policies = [a.rpartition("policyName/")[2] for a in actions if "policyName/" in a]
    if policies:  # `byoc autoscale`'s alarm starts a scaling policy
        return (
            f"  CloudWatch alarm {alarm['AlarmName']}: {alarm['StateValue']} ({watched} starts {', '.join(policies)})"
        )
    stat = alarm.get("ExtendedStatistic") or alarm.get("Statistic", "")
    told = f"; tells {', '.join(actions)}" if actions else ""
    return f"  CloudWatch alarm {alarm['AlarmName']}: {alarm['StateValue']} ({stat} {watched}{told})"
