"""Train, deploy, invoke and batch-transform the byoc images with the SageMaker Python SDK.

The SDK's own classes drive the two images: `Estimator` runs byoc-train, `Model` serves the
trained model with byoc-serve behind a `Predictor`, and `Transformer` runs a batch transform over
a folder of PNGs. With `--instance-type local` (the default) the SDK's local mode runs every step
in Docker on this machine (through docker compose), with `file://` locations and no AWS account.
The SDK pinned in examples/requirements.txt goes into a venv of its own (scripts/sdk_venv.sh):

    byoc demo-data /tmp/digits
    .venv-sdk/bin/python examples/sagemaker_sdk_local.py --data /tmp/digits \\
        --images /tmp/digits/test/01.zero --work /tmp/sdk-run

Local mode's containers here join the machine's own network (`network_mode: host`) instead of
the Docker network the SDK creates, and byoc-serve listens on 127.0.0.1 at `--port`: every
request stays on this machine's loopback, as with `byoc local`, and a Docker engine without a
bridge network works too. The SDK's usage telemetry is off in local mode.

On SageMaker the same script runs with real values and nothing else changes:
    --instance-type ml.m5.xlarge            a SageMaker instance type instead of `local`
    --role arn:aws:iam::ACCOUNT:role/NAME   an execution role SageMaker can assume
    --train-image / --serve-image           the images' ECR URIs (scripts/build_push.sh pushes them)
    --data s3://BUCKET/digits               the dataset (train/, valid/, test/) in S3
    --images s3://BUCKET/digits/test/01.zero  the PNGs to transform, in S3
    --sample zero.png                       a local PNG to send to the endpoint
    --output s3://BUCKET/sdk-run            where the model and the transform's results go
Then no container runs here: the SDK calls SageMaker, which bills the training job, the endpoint
while it exists and the transform job.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import boto3
import sagemaker
from sagemaker.deserializers import JSONDeserializer
from sagemaker.estimator import Estimator
from sagemaker.local import LocalSession, entities, local_session
from sagemaker.local import image as local_image
from sagemaker.model import Model
from sagemaker.predictor import Predictor
from sagemaker.serializers import IdentitySerializer

# Quick settings: a small network from scratch, fixed speed settings (no timing of candidates) and no
# INT8 copy; `--epochs` passes (one proves the path, ten read the digits). The byoc hyperparameter
# reference lists them all.
HYPERPARAMETERS = {
    "arch": "resnet18",
    "pretrained": "false",
    "image-size": 32,
    "batch-size": 64,
    "lr": 0.003,
    "num-workers": 1,
    "amp": "off",
    "channels-last": "true",
    "export-int8": "false",
}

PLACEHOLDER_ROLE = "arn:aws:iam::111111111111:role/byoc-sagemaker-example"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="the dataset folder (train/, valid/, test/): a path or s3:// URI")
    p.add_argument("--images", required=True, help="a folder of PNGs to batch-transform: a path or s3:// URI")
    p.add_argument("--sample", help="a PNG to send to the endpoint (default: the first PNG under a local --images)")
    p.add_argument("--work", help="local mode: where the model and the transform's results go")
    p.add_argument("--output", help="on SageMaker: the s3:// URI where the model and the results go")
    p.add_argument("--role", default=PLACEHOLDER_ROLE, help="SageMaker execution role ARN (local mode: any ARN)")
    p.add_argument("--instance-type", default="local", help="`local`, or a SageMaker instance type (default local)")
    p.add_argument("--train-image", default="byoc-train:latest", help="training image (default byoc-train:latest)")
    p.add_argument("--serve-image", default="byoc-serve:latest", help="serving image (default byoc-serve:latest)")
    p.add_argument("--epochs", type=int, default=1, help="training passes over the data (default 1)")
    p.add_argument("--port", type=int, default=8080, help="local mode: byoc-serve's port on 127.0.0.1 (default 8080)")
    p.add_argument("--region", default="us-east-1", help="AWS region (default us-east-1)")
    args = p.parse_args(argv)
    args.local = args.instance_type.startswith("local")
    if args.local and not args.work:
        p.error("local mode needs --work DIR")
    if not args.local and not (args.output or "").startswith("s3://"):
        p.error("on SageMaker --output must be an s3:// URI")
    if args.sample is None and args.images.startswith("s3://"):
        p.error("with s3:// --images, give --sample PNG: a local image to send to the endpoint")
    if args.sample is None and not any(Path(args.images).rglob("*.png")):
        p.error(f"no PNG under --images {args.images}")
    return args


def location(path_or_uri: str) -> str:
    """An s3:// URI as it is; a local path as the file:// URI local mode reads and writes."""
    if path_or_uri.startswith("s3://"):
        return path_or_uri
    return Path(path_or_uri).resolve().as_uri()


def host_network_containers() -> None:
    """Local mode's containers on the machine's own network (`network_mode: host`).

    The SDK writes a docker compose file with its own network and a port mapping; the SDK has no
    setting for that, so each container's entry is changed as it is written: no network of its
    own, no mapping, and every host name of the job resolving to 127.0.0.1. The SDK then reaches
    the server at 127.0.0.1 on its `serving_port`, where byoc-serve listens (`serving_env`)."""
    create_host = local_image._SageMakerContainer._create_docker_host

    def on_host_network(self, host, environment, optml_subdirs, command, volumes):
        config = create_host(self, host, environment, optml_subdirs, command, volumes)
        config.pop("networks", None)
        config.pop("ports", None)
        config["network_mode"] = "host"
        config["extra_hosts"] = [f"{h}:127.0.0.1" for h in self.hosts]
        return config

    local_image._SageMakerContainer._create_docker_host = on_host_network
    # The SDK asks Docker where the containers' ports are; on the host network they are here.
    entities.get_docker_host = lambda: "127.0.0.1"
    local_session.get_docker_host = lambda: "127.0.0.1"


def make_session(args: argparse.Namespace) -> sagemaker.Session:
    """A LocalSession for `local`, else a SageMaker session in `args.region`."""
    boto_session = boto3.Session(region_name=args.region)
    if not args.local:
        return sagemaker.Session(boto_session=boto_session)
    host_network_containers()
    # Local mode keeps every request on this machine: the SDK's usage telemetry is off as well.
    defaults = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
    session = LocalSession(boto_session=boto_session, sagemaker_config=defaults)
    # Each job's scratch folder (and so its docker compose project) goes under --work, not /tmp.
    scratch = Path(args.work, "sdk-local")
    scratch.mkdir(parents=True, exist_ok=True)
    session.config = {"local": {"serving_port": args.port, "container_root": str(scratch)}}
    return session


def serving_env(args: argparse.Namespace) -> dict[str, str]:
    """byoc-serve's settings: in local mode it listens on 127.0.0.1:`--port` (the host network)."""
    if not args.local:
        return {}
    return {"SAGEMAKER_BIND_TO_PORT": str(args.port), "BYOC_BIND_HOST": "127.0.0.1"}


def train(args: argparse.Namespace, session: sagemaker.Session, output: str) -> str:
    """A training job on `--data` (channel `training`); returns the model artifact's location."""
    estimator = Estimator(
        image_uri=args.train_image,
        role=args.role,
        instance_count=1,
        instance_type=args.instance_type,
        hyperparameters={**HYPERPARAMETERS, "epochs": args.epochs},
        output_path=output,
        base_job_name="byoc-sdk",
        sagemaker_session=session,
    )
    estimator.fit({"training": location(args.data)})
    print(f"model: {estimator.model_data}", flush=True)
    return estimator.model_data


def predict_one(model: Model, args: argparse.Namespace, png: bytes) -> dict:
    """Deploy `model` to an endpoint, send it one PNG, delete the endpoint; returns the answer."""
    predictor = model.deploy(
        initial_instance_count=1,
        instance_type=args.instance_type,
        endpoint_name=model.name,
        serializer=IdentitySerializer(content_type="image/png"),
        deserializer=JSONDeserializer(),
    )
    try:
        return predictor.predict(png)
    finally:
        # Local mode serves endpoints and transforms on the same port: the endpoint goes first.
        predictor.delete_endpoint()


def transform(model: Model, args: argparse.Namespace, output: str) -> str:
    """A batch transform of every PNG under `--images`: one <name>.png.out (JSON) per image."""
    transformer = model.transformer(
        instance_count=1,
        instance_type=args.instance_type,
        strategy="SingleRecord",
        accept="application/json",
        output_path=f"{output}/transform",
    )
    # Local mode has no CloudWatch logs to follow: the container's log is printed as it runs.
    transformer.transform(
        location(args.images), content_type="image/png", split_type=None, wait=True, logs=not args.local
    )
    return transformer.output_path


def sample_png(args: argparse.Namespace) -> bytes:
    """`--sample`, or the first PNG of a local `--images` folder."""
    path = Path(args.sample) if args.sample else sorted(Path(args.images).rglob("*.png"))[0]
    return path.read_bytes()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    session = make_session(args)
    output = location(args.work) if args.local else args.output.rstrip("/")
    model_data = train(args, session, output)
    model = Model(
        name=f"byoc-sdk-{time.strftime('%Y%m%d-%H%M%S')}",  # one SageMaker model for the endpoint and the transform
        image_uri=args.serve_image,
        model_data=model_data,
        role=args.role,
        env=serving_env(args),
        predictor_cls=Predictor,
        sagemaker_session=session,
    )
    answer = predict_one(model, args, sample_png(args))
    print(f"prediction: {json.dumps(answer)}", flush=True)
    print(f"transform output: {transform(model, args, output)}", flush=True)
    model.delete_model()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
