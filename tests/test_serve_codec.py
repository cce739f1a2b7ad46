"""Decoding request bodies and encoding predictions (byoc.serve.codec, byoc.serve.imaging)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from byoc.serve import codec
from byoc.serve.http_errors import BadRequest, ImageTooLarge, NotAcceptable, UnsupportedMediaType

MAX = 10_000_000


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "header",
    ["image/jpeg", "image/png", "Image/PNG; q=1", "application/x-image", "image/webp", "application/octet-stream"],
)
def test_image_content_types_are_accepted(header):
    images, batched = codec.decode(_png(Image.new("RGB", (8, 6))), header, MAX)
    assert len(images) == 1 and not batched and images[0].size == (8, 6)


@pytest.mark.parametrize("header", ["text/plain", "application/xml", "", None])
def test_other_content_types_get_415_listing_the_supported(header):
    with pytest.raises(UnsupportedMediaType) as err:
        codec.decode(b"x", header, MAX)
    assert err.value.status == 415 and "image/jpeg" in err.value.message and "application/x-npy" in err.value.message


@pytest.mark.parametrize(
    "accept", [None, "", "*/*", "application/json", "application/json; charset=utf-8", "text/html, application/*;q=0.5"]
)
def test_accept_json_or_anything(accept):
    codec.check_accept(accept)


@pytest.mark.parametrize("accept", ["text/csv", "application/x-npy", "application/json;q=0"])
def test_other_accept_is_406(accept):
    with pytest.raises(NotAcceptable) as err:
        codec.check_accept(accept)
    assert err.value.status == 406 and "application/json" in err.value.message


def test_modes_become_rgb_with_alpha_over_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    [img], _ = codec.decode(_png(rgba), "image/png", MAX)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)
    for mode in ("L", "P", "I;16", "CMYK"):
        src = Image.new(mode, (4, 4))
        fmt = "JPEG" if mode == "CMYK" else "PNG" if mode != "CMYK" else None
        buf = io.BytesIO()
        src.save(buf, format=fmt)
        [img], _ = codec.decode(buf.getvalue(), "image/*", MAX)
        assert img.mode == "RGB", mode


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    [out], _ = codec.decode(_jpeg(img, exif=exif), "image/jpeg", MAX)
    assert out.size == (20, 40)


def test_jpeg_draft_decodes_large_images_smaller_but_not_below_the_needed_size():
    [out], _ = codec.decode(_jpeg(Image.new("RGB", (1600, 1200))), "image/jpeg", MAX, draft_size=256)
    assert out.size == (400, 300)


def test_pixel_bomb_is_rejected_from_the_header_before_decoding(monkeypatch):
    bomb = _png(Image.new("L", (3000, 2000)))

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge) as err:
        codec.decode(bomb, "image/png", 1_000_000)
    assert err.value.status == 400 and "3000x2000" in err.value.message


def _noise_png() -> bytes:
    return _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))


@pytest.mark.parametrize("data", [b"not an image", _noise_png()[:2000]])
def test_undecodable_or_truncated_images_are_400(data):
    with pytest.raises(BadRequest) as err:
        codec.decode(data, "image/png", MAX)
    assert err.value.status == 400 and "decode" in err.value.message


def test_empty_body_is_400():
    with pytest.raises(BadRequest):
        codec.decode(b"", "image/png", MAX)


def test_json_instances_are_a_batch():
    b64 = base64.b64encode(_png(Image.new("RGB", (5, 7)))).decode()
    images, batched = codec.decode(
        json.dumps({"instances": [{"b64": b64}, {"b64": b64}]}).encode(), "application/json", MAX
    )
    assert batched and [i.size for i in images] == [(5, 7), (5, 7)]


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b'{"x": 1}', "instances"),
        (b'{"instances": []}', "instances"),
        (b'{"instances": [{"b64": "@@@"}]}', "instances[0].b64 is not valid base64"),
        (b'{"instances": [{"url": "http://example.com/a.jpg"}]}', "never fetches URLs"),
        (b'{"instances": [{"b64": "aGVsbG8="}]}', "instances[0]: cannot decode"),
    ],
)
def test_bad_json_is_400_with_the_reason(body, fragment):
    with pytest.raises(BadRequest) as err:
        codec.decode(body, "application/json", MAX)
    assert fragment in err.value.message


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def test_npy_images():
    [img], batched = codec.decode(_npy(np.zeros((6, 8, 3), np.uint8)), "application/x-npy", MAX)
    assert not batched and img.size == (8, 6)
    images, batched = codec.decode(_npy(np.zeros((3, 6, 8, 4), np.uint8)), "application/x-npy", MAX)
    assert batched and len(images) == 3 and images[0].mode == "RGB"
    [img], _ = codec.decode(_npy(np.zeros((6, 8), np.uint8)), "application/x-npy", MAX)
    assert img.mode == "RGB"


@pytest.mark.parametrize(
    "arr, fragment",
    [
        (np.array([{"a": 1}], dtype=object), "pickled"),
        (np.zeros((4, 4, 3), np.float32), "not uint8"),
        (np.zeros((4, 4, 5), np.uint8), "not an image"),
        (np.zeros((2, 2, 2, 2, 3), np.uint8), "not an image"),
    ],
)
def test_bad_npy_is_400(arr, fragment):
    with pytest.raises(BadRequest) as err:
        codec.decode(_npy(arr), "application/x-npy", MAX)
    assert fragment in err.value.message


def test_npy_pixel_bound():
    with pytest.raises(ImageTooLarge):
        codec.decode(_npy(np.zeros((100, 100, 3), np.uint8)), "application/x-npy", 9_999)


@pytest.mark.parametrize(
    "attrs, expected", [(None, 5), ("", 5), ("top_k=3", 3), ("a=b, top_k = 2;c=d", 2), ("top_k=50", 10)]
)
def test_top_k_from_custom_attributes(attrs, expected):
    assert codec.parse_top_k(attrs, 5, 10) == expected


@pytest.mark.parametrize("attrs", ["top_k=0", "top_k=x", "top_k=-1", "top_k"])
def test_bad_top_k_is_400(attrs):
    with pytest.raises(BadRequest):
        codec.parse_top_k(attrs, 5, 10)


def test_predictions_are_sorted_labelled_probabilities():
    probs = torch.softmax(torch.tensor([[0.1, 3.0, 1.0], [2.0, 0.0, 1.0]]), dim=1).numpy()
    preds = codec.top_predictions(probs, ["a", "b", "c"], 2)
    assert [p["label"] for p in preds[0]] == ["b", "c"] and [p["index"] for p in preds[1]] == [0, 2]
    assert preds[0][0]["score"] == pytest.approx(probs[0, 1].item(), abs=1e-6)
    assert preds[0][0]["score"] >= preds[0][1]["score"]
    assert json.loads(codec.encode(preds, batched=False)) == {"predictions": preds[0]}
    assert json.loads(codec.encode(preds, batched=True)) == {"predictions": preds}


def test_top_predictions_rank_as_torch_topk_does():
    """Scores and order as torch.topk gives them (same float32 values, rounded to 6 places); equal
    scores keep index order."""
    probs = torch.softmax(torch.randn(6, 40, generator=torch.Generator().manual_seed(3)), dim=1)
    scores, indices = torch.topk(probs, k=7, dim=1)
    preds = codec.top_predictions(probs.numpy(), [f"c{i}" for i in range(40)], 7)
    assert [[p["index"] for p in row] for row in preds] == indices.tolist()
    assert [[p["score"] for p in row] for row in preds] == [[round(s, 6) for s in row] for row in scores.tolist()]
    tied = codec.top_predictions(np.array([[0.1, 0.4, 0.1, 0.4]], dtype=np.float32), list("abcd"), 4)
    assert [p["index"] for p in tied[0]] == [1, 3, 0, 2]
