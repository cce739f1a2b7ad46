"""Multi-model endpoints' control plane: `byoc deploy --multi-model`, `byoc models add/list`,
`byoc predict --target-model`, and their status and teardown, against moto_server.

boto3 checks every request against SageMaker's and S3's service models before it is sent, so each moto
round trip also checks the request's shape (Mode, ModelDataUrl, the copy's metadata). moto stores
Mode=MultiModel without acting on it; InvokeEndpoint's TargetModel (moto answers canned bodies) is
checked with a Stubber against SageMaker Runtime's model.
"""

from __future__ import annotations

import datetime
import io
import json
import tarfile
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from byoc.aws import endpoint, predict, target_models
from byoc.aws.session import Aws
from byoc.cli import main
from byoc.core.errors import ConfigError
from tests.awsutil import ROLE, byoc, seed_account
from tests.helpers.endpoints import described_config, names

BUCKET = "byoc-mme"


def prefix(name: str) -> str:
    return f"s3://{BUCKET}/byoc/{name}/models/"


def mme_args(name: str, *extra: str) -> tuple[str, ...]:
    return ("deploy", "--name", name, "--multi-model", prefix(name), "--role", ROLE, "--poll", "0.05", *extra)


def model_tar(path: Path, meta: object = None, extra: dict[str, bytes] | None = None) -> Path:
    """A model.tar.gz as `byoc train-job` lays it out (model.json at the top, beside the weights)."""
    files = {"model.ts": b"torchscript", **(extra or {})}
    if meta is not None:
        files["model.json"] = json.dumps(meta).encode()
    with tarfile.open(path, "w:gz") as archive:
        for member, data in files.items():
            info = tarfile.TarInfo(f"./{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


META = {"format": "byoc-image-classifier", "arch": "resnet18", "labels": ["cat", "dog", "fox"]}


@pytest.fixture
def s3(aws):
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def keys(s3, name: str) -> dict[str, tuple]:
    """Object key -> (ETag, size, last modified), under NAME's prefix."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"byoc/{name}/models/").get("Contents", [])
    return {o["Key"]: (o["ETag"], o["Size"], o["LastModified"]) for o in listed}


def test_deploy_multi_model_points_the_model_at_the_prefix_once(aws, capsys):
    digests = seed_account(buckets=[f"s3://{BUCKET}"])
    out = byoc(capsys, *mme_args("mm1", "--instance-type", "ml.c5.xlarge"))
    assert "creating model mm1-m-" in out and f"multi-model: models under {prefix('mm1')})" in out
    assert "(1 x ml.c5.xlarge, container startup health check timeout 600 s, multi-model)" in out
    assert f"multi-model endpoint mm1: every model.tar.gz under {prefix('mm1')} is a model" in out
    assert "add a model: byoc models add --name mm1 KEY model.tar.gz" in out
    assert "invoke: byoc predict --name mm1 --target-model KEY.tar.gz IMAGE" in out
    assert "cost: 1 x ml.c5.xlarge bills about $0.204/hour however many models it serves" in out
    assert "note: the execution role must read" not in out  # the prefix is under byoc/mm1/
    config, model = described_config("mm1")
    assert model["PrimaryContainer"]["Mode"] == "MultiModel"
    assert model["PrimaryContainer"]["ModelDataUrl"] == prefix("mm1")
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MULTI_MODEL": "true"}
    assert model["PrimaryContainer"]["Image"].endswith(f"/byoc-serve-cpu@{digests['byoc-serve-cpu']}")  # the CPU image
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    assert "AsyncInferenceConfig" not in config

    out = byoc(capsys, *mme_args("mm1", "--instance-type", "ml.c5.xlarge"))
    assert f"endpoint mm1 already runs {config['EndpointConfigName']} (InService)" in out
    assert "creating" not in out
    assert len(names("mm1-")[0]) == 1 and len(names("mm1-")[1]) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--multi-model", "s3://b/models"), "--multi-model must be an s3://BUCKET/PREFIX/ prefix ending in /"),
        (("--multi-model", "b/models/"), "--multi-model must be an s3://BUCKET/PREFIX/ prefix ending in /"),
        (("--multi-model", "s3://b/m/", "--model-data", "s3://b/m.tar.gz"), "--model-data and --multi-model: pick one"),
        ((), "deploy needs --model-data s3://.../model.tar.gz (or --multi-model s3://BUCKET/PREFIX/)"),
        (("--multi-model", "s3://b/m/", "--instance-type", "ml.g5.xlarge"), "--multi-model runs on CPU instances only"),
        (("--multi-model", "s3://b/m/", "--instance-type", "ml.p3.2xlarge"), "not with a custom container"),
        (("--multi-model", "s3://b/m/", "--instance-type", "ml.inf2.xlarge"), "got --instance-type ml.inf2.xlarge"),
        (("--multi-model", "s3://b/m/", "--async", "--output", "s3://b/o/"), "--async and --multi-model: pick one"),
    ],
)
def test_multi_model_flag_errors_create_nothing(aws, capsys, extra, message):
    assert main(["deploy", "--name", "mm2", "--role", ROLE, *extra]) == 1
    assert message in capsys.readouterr().err
    assert names("mm2") == ([], [])


def test_the_request_shapes_match_sagemakers_model():
    # botocore's own validator (the one every boto3 call runs), on the requests as byoc builds them
    from botocore.validate import validate_parameters

    spec = endpoint.DeploySpec(name="mm3", image="i", model_data="s3://b/m/", role=ROLE, multi_model=True)
    service = boto3.client("sagemaker", region_name="us-east-1").meta.service_model
    model = endpoint.model_request(spec)
    validate_parameters(model, service.operation_model("CreateModel").input_shape)
    config = endpoint.config_request(spec, model["ModelName"])
    validate_parameters(config, service.operation_model("CreateEndpointConfig").input_shape)
    # single-model endpoints keep their names: Mode and the multi-model variable only with --multi-model
    single = endpoint.model_request(endpoint.DeploySpec(name="mm3", image="i", model_data="s3://b/m.tar.gz", role=ROLE))
    assert "Mode" not in single["PrimaryContainer"] and single["PrimaryContainer"]["Environment"] == {}


def test_models_add_uploads_once_and_list_shows_them(s3, capsys, tmp_path):
    seed_account()
    byoc(capsys, *mme_args("mm4"))
    tar = model_tar(tmp_path / "model.tar.gz", META)
    out = byoc(capsys, "models", "add", "--prefix", prefix("mm4"), "dogs", str(tar))
    assert f"uploading {tar} (" in out and f"resnet18, 3 classes) to {prefix('mm4')}dogs.tar.gz" in out
    assert "invoke: byoc predict --name ENDPOINT --target-model dogs.tar.gz IMAGE" in out
    stored = keys(s3, "mm4")
    assert list(stored) == ["byoc/mm4/models/dogs.tar.gz"]
    assert stored["byoc/mm4/models/dogs.tar.gz"][1] == tar.stat().st_size
    out = byoc(capsys, "models", "add", "--prefix", prefix("mm4"), "dogs.tar.gz", str(tar))
    assert "already holds" in out and "(same SHA-256): nothing to copy" in out
    assert keys(s3, "mm4") == stored

    # a changed file under the same name replaces it, with the caveat about instances that loaded it
    model_tar(tar, {**META, "labels": ["cat", "dog"]})
    out = byoc(capsys, "models", "add", "--name", "mm4", "dogs", str(tar))
    assert "2 classes" in out and "note: replacing" in out and "give a new version a new name" in out
    assert "--name mm4 --target-model dogs.tar.gz" in out

    # from S3: the prefix from the endpoint's model, a server-side copy, once
    s3.upload_file(str(tar), BUCKET, "training/output/model.tar.gz")
    source = f"s3://{BUCKET}/training/output/model.tar.gz"
    out = byoc(capsys, "models", "add", "--name", "mm4", "cats-v2", source)
    assert f"copying {source} (" in out and f"to {prefix('mm4')}cats-v2.tar.gz (server-side)" in out
    out = byoc(capsys, "models", "add", "--name", "mm4", "cats-v2", source)
    assert "(same ETag): nothing to copy" in out
    assert sorted(keys(s3, "mm4")) == ["byoc/mm4/models/cats-v2.tar.gz", "byoc/mm4/models/dogs.tar.gz"]

    for where in (("--name", "mm4"), ("--prefix", prefix("mm4"))):
        out = byoc(capsys, "models", "list", *where)
        assert f"models under {prefix('mm4')}:" in out
        assert "cats-v2.tar.gz" in out and "dogs.tar.gz" in out and "2 model(s)" in out
        assert "last modified (UTC)" in out
    listed = target_models.list_models(Aws(boto3.Session(), "us-east-1"), prefix("mm4"))
    assert [m.key for m in listed] == ["cats-v2.tar.gz", "dogs.tar.gz"]
    assert all(m.size == tar.stat().st_size for m in listed)
    out = byoc(capsys, "models", "list", "--prefix", f"s3://{BUCKET}/empty/")
    assert f"no models under s3://{BUCKET}/empty/: add one with `byoc models add" in out


def test_models_add_refuses_what_is_not_a_model_tar(s3, capsys, tmp_path):
    seed_account(models=[f"s3://{BUCKET}/mm5/model.tar.gz"])
    byoc(
        capsys,
        "deploy",
        "--name",
        "mm5",
        "--model-data",
        f"s3://{BUCKET}/mm5/model.tar.gz",
        "--role",
        ROLE,
        "--poll",
        "0.05",
    )
    plain = tmp_path / "notes.txt"
    plain.write_text("not a tarball")
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(model_tar(tmp_path / "whole.tar.gz", META).read_bytes()[:60])
    bare, listed = model_tar(tmp_path / "bare.tar.gz"), model_tar(tmp_path / "list.tar.gz", ["x"])
    missing = tmp_path / "missing.tar.gz"
    zipped, nothing = f"s3://{BUCKET}/raw/model.tar.gz", f"s3://{BUCKET}/raw/nothing.tar.gz"
    s3.put_object(Bucket=BUCKET, Key="raw/model.tar.gz", Body=b"PK\x03\x04 a zip")
    into = ("--prefix", prefix("mm5"), "dogs")
    cases = [  # each refusal: one line that names what it refuses
        ((*into, str(plain)), f"{plain} is not a readable gzip tar (a model.tar.gz)"),
        ((*into, str(truncated)), f"{truncated} is not a readable gzip tar"),
        ((*into, str(bare)), f"{bare} has no model.json at its top level: not a byoc model.tar.gz"),
        ((*into, str(listed)), f"{listed}: its model.json is not a JSON object"),
        ((*into, str(missing)), f"no such file: {missing}"),
        ((*into, zipped), f"{zipped} is not gzip-compressed: not a model.tar.gz"),
        ((*into, nothing), f"no such object: {nothing}"),
        (("--prefix", prefix("mm5"), "../up", str(plain)), "model name '../up' must be 1-200 letters"),
        (("--prefix", f"s3://{BUCKET}/models", "dogs", str(plain)), "--prefix must be an s3://BUCKET/PREFIX/ prefix"),
        (("--name", "mm5", "dogs", str(plain)), "endpoint mm5 is not a multi-model endpoint"),
        (("--name", "mm-none", "dogs", str(plain)), "no endpoint mm-none in us-east-1 to take the prefix from"),
    ]
    for extra, message in cases:
        assert main(["models", "add", *extra]) == 1, extra
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert keys(s3, "mm5") == {}
    with pytest.raises(SystemExit) as usage:  # --name or --prefix: one, not both, not neither
        main(["models", "list"])
    err = capsys.readouterr().err
    assert usage.value.code == 2 and "--name" in err.splitlines()[-1] and "--prefix" in err.splitlines()[-1], err


def test_the_artifact_file_name_is_the_artifact_modules():
    from byoc.core import artifact

    assert target_models.META_FILE == artifact.META_FILE


def test_a_model_folder_given_for_the_tarball_is_told_how_to_pack_it(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(META))
    with pytest.raises(ConfigError) as raised:
        target_models.check_artifact(tmp_path)
    message = str(raised.value)
    assert "no such file" not in message and "\n" not in message
    assert f"{tmp_path} is a folder" in message and f"tar -czf model.tar.gz -C {tmp_path} ." in message


def runtime_stub() -> tuple[Aws, Stubber]:
    runtime = boto3.client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    fake = Aws(session=boto3.Session(region_name="us-east-1"), region="us-east-1", _account="123456789012")
    fake._clients["sagemaker-runtime"] = runtime
    return fake, Stubber(runtime)


def test_predict_sends_the_target_model(tmp_path, capsys):
    # Stubber: moto's InvokeEndpoint answers canned bodies; the request is checked against SageMaker
    # Runtime's service model (TargetModel among InvokeEndpoint's parameters).
    image = tmp_path / "dog.png"
    image.write_bytes(b"\x89PNG")
    fake, stub = runtime_stub()
    body = json.dumps({"predictions": [{"label": "dog", "score": 0.9}]}).encode()
    from botocore.response import StreamingBody

    with stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"},
            {
                "EndpointName": "mm6",
                "Body": b"\x89PNG",
                "ContentType": "image/png",
                "Accept": "application/json",
                "CustomAttributes": "top_k=1",
                "TargetModel": "dogs.tar.gz",
            },
        )
        spec = predict.PredictSpec(endpoint="mm6", images=[image], top_k=1, target_model="dogs.tar.gz")
        assert predict.predict(fake, spec) == 0
        stub.assert_no_pending_responses()
    assert "dog" in capsys.readouterr().out


def test_predict_refuses_a_target_model_with_async(aws, tmp_path, capsys):
    image = tmp_path / "dog.png"
    image.write_bytes(b"\x89PNG")
    argv = ["predict", "--name", "mm7", "--async", "--target-model", "dogs.tar.gz", str(image)]
    assert main(argv) == 1
    assert "InvokeEndpointAsync has no TargetModel; drop --async" in capsys.readouterr().err


def test_status_lists_the_models_and_teardown_keeps_them(s3, capsys, tmp_path):
    seed_account()
    byoc(capsys, *mme_args("mm8"))
    tar = model_tar(tmp_path / "model.tar.gz", META)
    for key in ("a", "b"):
        byoc(capsys, "models", "add", "--name", "mm8", key, str(tar))
    out = byoc(capsys, "status", "--name", "mm8")
    assert "loaded now: no LoadedModelCount datapoint in the last 10 minutes" in out
    # SageMaker's per-instance count, as its instances put it: two instances holding 2 and 1.
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    dims = [{"Name": "EndpointName", "Value": "mm8"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    minute = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0) - datetime.timedelta(
        minutes=1
    )
    for value in (2, 1):
        cw.put_metric_data(
            Namespace="/aws/sagemaker/Endpoints",
            MetricData=[{"MetricName": "LoadedModelCount", "Dimensions": dims, "Value": value, "Timestamp": minute}],
        )
    out = byoc(capsys, "status", "--name", "mm8")
    assert "loaded now: 3 (CloudWatch LoadedModelCount, all instances, " in out
    assert f"kind: multi-model, models under {prefix('mm8')}" in out
    assert f"models under {prefix('mm8')}: 2 (a.tar.gz, b.tar.gz); loaded on demand" in out
    assert "variant AllTraffic: 1 x ml.m5.large" in out and "estimated cost: about $0.12/hour" in out
    found = byoc_status("mm8")
    assert found["kind"] == "multi-model" and found["model_keys"] == ["a.tar.gz", "b.tar.gz"]
    assert found["loaded_models"] == 3

    out = byoc(capsys, "teardown", "--name", "mm8", "--poll", "0.05")
    assert "deleting endpoint mm8" in out and "deleting model mm8-m-" in out
    assert f"kept: the models under {prefix('mm8')} (a multi-model endpoint's; data" in out
    assert f"`aws s3 rm --recursive {prefix('mm8')}` deletes them" in out
    assert names("mm8") == ([], []) and len(keys(s3, "mm8")) == 2
    assert "nothing left to delete" in byoc(capsys, "teardown", "--name", "mm8")


def byoc_status(name: str) -> dict:
    from byoc.aws import status

    return status.status(Aws(boto3.Session(), "us-east-1"), name)
