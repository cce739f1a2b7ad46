"""UpdateEndpoint, which moto_server lacks, answered on the CLI's SageMaker clients the way botocore's
Stubber answers a call (a before-call hook), while moto keeps everything else: models, configs, tags,
alarms, scaling. DescribeEndpoint then reports the scripted rollout (an after-call hook on moto's
answer): the new fleet coming up and baking, then the end the test chose: the new config InService,
a rollback to the old config InService with a FailureReason, or UpdateRollbackFailed.

Each request goes through byoc's validator first (the CLI's clients install it), so what is recorded
is what a real account would have been sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from botocore.awsrequest import AWSResponse

from byoc.aws.session import Aws

REASON = "Alarm byoc-{name}-5xx-errors went into ALARM during the canary's baking period"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


class FakeUpdates:
    """Records each UpdateEndpoint request and plays its rollout through DescribeEndpoint."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.outcome = "success"  # or "rolled-back", "rollback-failed"
        self.on_update: Callable[[dict], None] | None = None  # runs when UpdateEndpoint arrives
        self.variants: dict[str, dict] = {}  # endpoint -> fields over moto's ProductionVariants[0]
        self._script: dict[str, list[dict]] = {}  # endpoint -> the states DescribeEndpoint reports next
        self._steady: dict[str, dict] = {}  # endpoint -> the state it stays in once the script is played
        self._params: dict | None = None

    def installed(self, monkeypatch) -> FakeUpdates:
        """Hook into every SageMaker client byoc's commands make."""
        original = Aws.client

        def client(aws: Aws, service: str):
            new = service not in aws._clients
            made = original(aws, service)
            if new and service == "sagemaker":
                self.install(made)
            return made

        monkeypatch.setattr(Aws, "client", client)
        return self

    def install(self, sm) -> None:
        events = sm.meta.events
        events.register("before-parameter-build.sagemaker.UpdateEndpoint", self._capture, unique_id=f"fu-p{id(sm)}")
        events.register("before-call.sagemaker.UpdateEndpoint", self._answer, unique_id=f"fu-c{id(sm)}")
        events.register("after-call.sagemaker.DescribeEndpoint", self._describe, unique_id=f"fu-d{id(sm)}")

    def _capture(self, params, **_) -> None:
        self._params = dict(params)

    def _answer(self, **_):
        params, self._params = self._params or {}, None
        self.requests.append(params)
        if self.on_update:
            self.on_update(params)
        name, target = params["EndpointName"], params["EndpointConfigName"]
        self._script[name] = self._play(name, target)
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name.lower()}"
        return AWSResponse(None, 200, {}, None), {"EndpointArn": arn}

    def _play(self, name: str, target: str) -> list[dict]:
        """The states of one rollout: new fleet creating, canary baking, then the chosen end."""
        count = self.variants.get(name, {}).get("DesiredInstanceCount", 1)

        def pending(current: int, weight: float, status: str, message: str) -> dict:
            variant = {
                "VariantName": "AllTraffic",
                "CurrentInstanceCount": current,
                "DesiredInstanceCount": count,
                "CurrentWeight": weight,
                "DesiredWeight": 1.0,
                "VariantStatus": [{"Status": status, "StatusMessage": message, "StartTime": NOW}],
            }
            return {
                "EndpointStatus": "Updating",
                "PendingDeploymentSummary": {"EndpointConfigName": target, "ProductionVariants": [variant]},
            }

        script = [pending(0, 0.0, "Creating", "launching the new fleet"), pending(count, 0.1, "Baking", "canary")]
        previous = self._steady.get(name, {}).get("EndpointConfigName")
        reason = REASON.format(name=name)
        if self.outcome == "success":
            self._steady[name] = {"EndpointStatus": "InService", "EndpointConfigName": target}
        elif self.outcome == "rolled-back":
            script.append({"EndpointStatus": "Updating", "PendingDeploymentSummary": None})
            self._steady[name] = {"EndpointStatus": "InService", "FailureReason": reason}
        else:
            self._steady[name] = {"EndpointStatus": "UpdateRollbackFailed", "FailureReason": reason}
        if previous and self.outcome != "success":
            self._steady[name]["EndpointConfigName"] = previous
        return script

    def settle(self, name: str) -> None:
        """SageMaker is done with the rollout: DescribeEndpoint reports its end from now on."""
        self._script.pop(name, None)

    def _describe(self, parsed, **_) -> None:
        name = parsed.get("EndpointName")
        if name is None:
            return
        if name in self.variants and parsed.get("ProductionVariants"):
            parsed["ProductionVariants"][0].update(self.variants[name])
        script = self._script.get(name)
        state = script.pop(0) if script else self._steady.get(name, {})
        for key, value in state.items():
            if value is None:
                parsed.pop(key, None)
            else:
                parsed[key] = value
