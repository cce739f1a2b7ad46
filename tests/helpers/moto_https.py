"""moto_server as real S3 meets byoc's requests: over TLS. Run as a script with moto_server's arguments.

moto does not evaluate the conditions of a bucket policy's statements: a statement with a Condition
counts as a refusal whatever the request. The TLS-only statement byoc puts on its buckets (Deny when
aws:SecureTransport is false: byoc.aws.s3data.with_tls_only) would then refuse every object request,
although against real S3 byoc's clients always use HTTPS and the statement never applies. Here a
bucket's permissions are judged without that statement; every other statement as moto judges it.
"""

from __future__ import annotations

import json
import sys

from moto.iam.access_control import IAMPolicy, PermissionResult
from moto.s3 import models
from moto.server import main


def _plain_http_only(statement: dict) -> bool:
    """A statement that applies to requests without TLS only (aws:SecureTransport false, its one condition)."""
    condition = statement.get("Condition") or {}
    flag = (condition.get("Bool") or {}).get("aws:SecureTransport")
    return (
        list(condition) == ["Bool"]
        and list(condition["Bool"]) == ["aws:SecureTransport"]
        and str(flag).lower() == "false"
    )


def get_permission(self, action: str, resource: str):
    if self.policy is None:
        return PermissionResult.NEUTRAL
    policy = json.loads(self.policy.decode())
    statements = policy.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements
    kept = [s for s in statements if not _plain_http_only(s)]
    if not kept:
        return PermissionResult.NEUTRAL
    return IAMPolicy(json.dumps({**policy, "Statement": kept})).is_action_permitted(action, resource)


models.FakeBucket.get_permission = get_permission

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
