"""Monitoring a really trained model: a quick training run on the demo digits writes the baseline, the
test split is answered as byoc-serve answers it (same preprocessing, same JSON) and captured in
SageMaker's record format; `byoc monitor report` finds no drift in it, and finds the darkened copy."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from PIL import Image, ImageEnhance

from byoc.cli import main
from tests.helpers import capture as cap
from tests.helpers.models import QUICK


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained in-process on the digits (30 training images per class), with its test split."""
    from byoc.local.demo_data import write_demo_dataset
    from byoc.training import train
    from byoc.training.contract import Job, TrainConfig

    root = tmp_path_factory.mktemp("digits")
    write_demo_dataset(root, size=16)
    for cls in (root / "train").iterdir():
        for extra in sorted(cls.iterdir())[30:]:
            extra.unlink()
    job = Job.one_host(tmp_path_factory.mktemp("job") / "opt_ml", {"training": root}, num_cpus=2)
    train.run(job, TrainConfig(**QUICK))
    return job.model_dir, sorted((root / "test").rglob("*.png"))


def answer_and_capture(model_dir, images: list[bytes], out):
    """Each image answered by the exported model, through the serving side's decoding and encoding,
    written as one capture record per request under out/ENDPOINT/VARIANT/yyyy/mm/dd/hh/."""
    import torch

    from byoc.core import artifact
    from byoc.core.images import open_image
    from byoc.core.preprocessing import eval_batch, eval_transform
    from byoc.serve import codec

    net, meta = artifact.load(model_dir)
    transform = eval_transform(meta.preprocessing)
    folder = out / "digits" / "AllTraffic" / cap.START.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True)
    lines = []
    with torch.inference_mode():
        for i, data in enumerate(images):
            probs = net(eval_batch([open_image(data, 10**7)], transform)).softmax(1).numpy()
            answer = codec.encode(codec.top_predictions(probs, meta.labels, 3), batched=False).decode()
            lines.append(json.dumps(cap.record(data, answer, cap.START + timedelta(seconds=i))))
    (folder / "00-capture.jsonl").write_text("\n".join(lines) + "\n")
    return out


def darkened(path) -> bytes:
    out = io.BytesIO()
    ImageEnhance.Brightness(Image.open(path).convert("RGB")).enhance(0.4).save(out, format="PNG")
    return out.getvalue()


def test_requests_from_the_test_split_give_no_violation(trained, tmp_path, capsys):
    model_dir, test_files = trained
    capture = answer_and_capture(model_dir, [p.read_bytes() for p in test_files], tmp_path)
    code = main(["monitor", "report", "--local", str(capture), "--model", str(model_dir), "--json"])
    assert (code, json.loads(capsys.readouterr().out)) == (0, {"violations": []})


def test_darkened_requests_are_caught(trained, tmp_path, capsys):
    model_dir, test_files = trained
    capture = answer_and_capture(model_dir, [darkened(p) for p in test_files], tmp_path)
    code = main(["monitor", "report", "--local", str(capture), "--model", str(model_dir), "--json"])
    violated = {v["metric_name"] for v in json.loads(capsys.readouterr().out)["violations"]}
    assert code == 1 and {"brightness_ks", "colour_ks"} <= violated
