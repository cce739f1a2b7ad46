"""What the `byoc ec2-train` tests share: an Aws session holding the test's own clients (Stubbers, or
clients of a moto_server), and an epoch line as the training image logs it on the instance."""

from __future__ import annotations

import boto3

from byoc.aws.session import Aws

EPOCH_LINE = "epoch=1 train_loss=0.5 train_accuracy=0.8 val_loss=0.6 val_accuracy=0.75 epoch_seconds=3.0"


def fake_aws(**clients) -> Aws:
    return Aws(
        session=boto3.Session(region_name="us-east-1"), region="us-east-1", _account="123456789012", _clients=clients
    )
