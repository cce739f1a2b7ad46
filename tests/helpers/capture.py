"""Synthetic traffic for the monitoring tests: a baseline from generated validation images and answers,
and SageMaker capture files of requests drawn from the same population or from a shifted one."""

from __future__ import annotations

import base64
import io
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from byoc.monitor import baseline as bl

LABELS = [f"breed{i}" for i in range(10)]
WIDTH, HEIGHT = 48, 32  # landscape: a rotated image is portrait
START = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Population:
    """How requests are drawn: the class mix, the confidence's Beta(a, b), brightness, orientation."""

    class_weights: tuple[float, ...] = (1.0,) * len(LABELS)
    confidence: tuple[float, float] = (8.0, 2.0)
    brightness: float = 1.0  # a factor on the pixels
    rotated: bool = False


def image_bytes(rng: np.random.Generator, pop: Population, fmt: str = "PNG") -> bytes:
    level = rng.uniform(0.35, 0.75) * 255
    pixels = np.clip(rng.normal(level, 30, (HEIGHT, WIDTH, 3)) * pop.brightness, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    if pop.rotated:
        img = img.transpose(Image.Transpose.ROTATE_90)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def answers(rng: np.random.Generator, pop: Population, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label indices, top-1 confidences) of n answers."""
    weights = np.asarray(pop.class_weights) / sum(pop.class_weights)
    return rng.choice(len(LABELS), size=n, p=weights), rng.beta(*pop.confidence, size=n)


def write_baseline(model_dir: Path, n: int = 600, seed: int = 0) -> Path:
    """A model folder holding monitoring/ written by byoc.monitor.baseline.write, as training writes it."""
    rng = np.random.default_rng(seed)
    pop = Population()
    images = model_dir.parent / f"{model_dir.name}-valid"
    images.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = images / f"{i:04d}.png"
        path.write_bytes(image_bytes(rng, pop))
        files.append(path)
    predicted, confidence = answers(rng, pop, n)
    return bl.write(model_dir, LABELS, predicted.tolist(), confidence.tolist(), files)


def answer_json(label_index: int, score: float) -> str:
    others = [i for i in range(len(LABELS)) if i != label_index][:2]
    rest = (1 - score) / 2
    ranked = [{"label": LABELS[label_index], "index": label_index, "score": round(score, 6)}]
    ranked += [{"label": LABELS[i], "index": i, "score": round(rest, 6)} for i in others]
    return json.dumps({"predictions": ranked})


def record(image: bytes, answer: str, moment: datetime, content_type: str = "image/png") -> dict:
    """One capture record, as SageMaker writes it (input BASE64, output JSON)."""
    return {
        "captureData": {
            "endpointInput": {
                "observedContentType": content_type,
                "mode": "INPUT",
                "data": base64.b64encode(image).decode(),
                "encoding": "BASE64",
            },
            "endpointOutput": {
                "observedContentType": "application/json",
                "mode": "OUTPUT",
                "data": answer,
                "encoding": "JSON",
            },
        },
        "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "eventVersion": "0",
    }


def write_capture(root: Path, pop: Population, n: int = 300, seed: int = 1, extra_lines: tuple[str, ...] = ()) -> Path:
    """n records drawn from `pop` in SageMaker's layout (ENDPOINT/VARIANT/yyyy/mm/dd/hh/*.jsonl), over
    one hour from START, with `extra_lines` appended to the last file. Returns `root`."""
    rng = np.random.default_rng(seed)
    predicted, confidence = answers(rng, pop, n)
    lines: dict[Path, list[str]] = {}
    for i in range(n):
        moment = START + timedelta(seconds=i * 3600 // n)
        folder = root / "demo-endpoint" / "AllTraffic" / moment.strftime("%Y/%m/%d/%H")
        name = folder / f"{moment:%M}-capture.jsonl"
        doc = record(image_bytes(rng, pop), answer_json(int(predicted[i]), float(confidence[i])), moment)
        lines.setdefault(name, []).append(json.dumps(doc))
    last = sorted(lines)[-1]
    lines[last] += list(extra_lines)
    for path, content in lines.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(content) + "\n")
    return root
