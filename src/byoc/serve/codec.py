"""Request bodies -> images, and predictions -> response bodies. Pure functions, no model."""

from __future__ import annotations

import base64
import binascii
import io
import json

import numpy as np
from PIL import Image

from byoc.core.errors import ImageError
from byoc.core.images import image_from_array, open_image
from byoc.serve import negotiation
from byoc.serve.http_errors import BadRequest, NotAcceptable, UnsupportedMediaType, image_rejected

JSON = "application/json"
NPY = "application/x-npy"
X_IMAGE = "application/x-image"
OCTET = "application/octet-stream"
SUPPORTED = ("image/jpeg", "image/png", "image/* (any format Pillow reads)", X_IMAGE, OCTET, JSON, NPY)
SUPPORTED_TEXT = ", ".join(SUPPORTED)
ACCEPTABLE = ("application/json", "application/*", "*/*")


def media_type(header: str | None) -> str:
    """`Image/JPEG; charset=x` -> `image/jpeg` ('' when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def is_image_type(mtype: str) -> bool:
    return mtype.startswith("image/") or mtype in (X_IMAGE, OCTET)


def check_content_type(header: str | None) -> str:
    """The request's media type, or UnsupportedMediaType listing what is accepted."""
    mtype = media_type(header)
    if is_image_type(mtype) or mtype in (JSON, NPY):
        return mtype
    shown = f"content type {mtype!r}" if mtype else "no content type"
    raise UnsupportedMediaType(f"{shown} is not supported: send one of {SUPPORTED_TEXT}")


def check_accept(header: str | None) -> None:
    """Accept: absent, */*, application/* or application/json (q=0 excluded); else NotAcceptable."""
    if not negotiation.accepts(header, ACCEPTABLE):
        raise NotAcceptable(f"cannot answer with Accept {header!r}: responses are {JSON}")


def parse_top_k(custom_attributes: str | None, default: int, num_classes: int) -> int:
    """`top_k=3` from X-Amzn-SageMaker-Custom-Attributes (pairs split by ',' or ';'), capped at the class count."""
    return min(negotiation.top_k(custom_attributes, default), num_classes)


def _decode_json(body: bytes, max_pixels: int, draft_size: int | None) -> list[Image.Image]:
    usage = 'send {"instances": [{"b64": "<base64 image>"}, ...]}'
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON ({exc}): {usage}") from exc
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequest(f"JSON body has no non-empty 'instances' list: {usage}")
    images = []
    for i, inst in enumerate(instances):
        if isinstance(inst, dict) and "url" in inst and "b64" not in inst:
            raise BadRequest(f"instances[{i}]: the server never fetches URLs: {usage}")
        if not isinstance(inst, dict) or not isinstance(inst.get("b64"), str):
            raise BadRequest(f"instances[{i}] has no 'b64' string: {usage}")
        try:
            data = base64.b64decode(inst["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"instances[{i}].b64 is not valid base64 ({exc})") from exc
        images.append(_open(data, max_pixels, draft_size, f"instances[{i}]: "))
    return images


def _open(data: bytes, max_pixels: int, draft_size: int | None, where: str = "") -> Image.Image:
    try:
        return open_image(data, max_pixels, draft_size)
    except ImageError as exc:
        raise image_rejected(exc, where) from exc


def _from_array(arr: np.ndarray, max_pixels: int) -> Image.Image:
    try:
        return image_from_array(arr, max_pixels)
    except ImageError as exc:
        raise image_rejected(exc) from exc


def _decode_npy(body: bytes, max_pixels: int) -> tuple[list[Image.Image], bool]:
    usage = "send a uint8 array saved with numpy.save: HW, HWC (C = 1, 3 or 4) or NHWC"
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, EOFError, OSError, ... for bad files
        raise BadRequest(
            f"body is not a valid .npy array without pickled objects ({type(exc).__name__}): {usage}"
        ) from exc
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        raise BadRequest(f"array dtype is {getattr(arr, 'dtype', type(arr).__name__)}, not uint8: {usage}")
    if arr.ndim == 4:
        if arr.shape[0] == 0:
            raise BadRequest(f"array holds no images: {usage}")
        return [_from_array(a, max_pixels) for a in arr], True
    if arr.ndim in (2, 3):
        return [_from_array(arr, max_pixels)], False
    raise BadRequest(f"array of shape {list(arr.shape)} is not an image: {usage}")


def decode(
    body: bytes, content_type: str | None, max_pixels: int, draft_size: int | None = None
) -> tuple[list[Image.Image], bool]:
    """(RGB images, batched): batched bodies (JSON instances, NHWC npy) get a list of prediction lists back."""
    mtype = check_content_type(content_type)
    if not body:
        raise BadRequest(f"empty body: send an image or one of {SUPPORTED_TEXT}")
    if mtype == JSON:
        return _decode_json(body, max_pixels, draft_size), True
    if mtype == NPY:
        return _decode_npy(body, max_pixels)
    return [_open(body, max_pixels, draft_size)], False


def top_predictions(probs: np.ndarray, labels: list[str], top_k: int) -> list[list[dict]]:
    """Per image, the top_k classes sorted by probability: [{"label", "index", "score"}, ...].
    Equal scores keep index order (a stable sort), so the answer does not depend on the runtime."""
    probs = np.asarray(probs)
    indices = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    scores = np.take_along_axis(probs, indices, axis=1)
    return [
        [{"label": labels[i], "index": i, "score": round(s, 6)} for s, i in zip(row_s, row_i, strict=True)]
        for row_s, row_i in zip(scores.tolist(), indices.tolist(), strict=True)
    ]


def encode(predictions: list[list[dict]], batched: bool) -> bytes:
    """{"predictions": [...]} for one image, {"predictions": [[...], ...]} for a batch."""
    return json.dumps({"predictions": predictions if batched else predictions[0]}).encode()
