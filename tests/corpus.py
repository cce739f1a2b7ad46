"""A corpus of awkward request bodies for POST /invocations, every one generated here with Pillow
and numpy (no binary files in the repository), each with the status the server must answer.

Used by tests/test_corpus_handler.py (the handler in-process) and tests/test_corpus_container.py
(the serving image). Every answer is JSON: a 200 carries "predictions", an error exactly
{"error": str, "status": int} with the HTTP status and no traceback (`check_answer`).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Traces of a Python traceback or an HTML error page: never in a client's answer.
LEAKS = ("Traceback", 'File "', "<html", "<!DOCTYPE")


@dataclass(frozen=True)
class Case:
    """One request body and the statuses the server may answer it with."""

    name: str
    body: bytes
    content_type: str
    expected: frozenset[int]
    why: str
    error_says: tuple[str, ...] = ()  # words the error message must contain (it says why)
    same_as: bytes | None = None  # a PNG whose predictions this body's must equal
    differs_from: bytes | None = None  # a PNG whose predictions this body's must not equal

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type}


def check_answer(case: Case, status: int, content_type: str | None, raw: bytes) -> dict:
    """Assert the answer's status is one the case accepts and its body has the documented JSON shape;
    return the parsed body."""
    text = raw.decode("utf-8", errors="replace")
    assert status in case.expected, f"{case.name}: answered {status}, expected {sorted(case.expected)}: {text[:500]}"
    if content_type is not None:
        assert content_type.split(";")[0].strip() == "application/json", f"{case.name}: Content-Type {content_type}"
    try:
        doc = json.loads(raw)
    except ValueError:
        raise AssertionError(f"{case.name}: the {status} body is not JSON: {text[:500]}") from None
    assert not any(leak in text for leak in LEAKS), f"{case.name}: the body leaks internals: {text[:500]}"
    assert isinstance(doc, dict), f"{case.name}: body is not a JSON object: {text[:500]}"
    if status == 200:
        assert isinstance(doc.get("predictions"), list) and doc["predictions"], f"{case.name}: {text[:500]}"
        return doc
    assert set(doc) == {"error", "status"}, f"{case.name}: error body keys {sorted(doc)}"
    assert isinstance(doc["error"], str) and doc["error"].strip(), f"{case.name}: empty error message"
    assert type(doc["status"]) is int and doc["status"] == status, f"{case.name}: body status {doc['status']!r}"
    for word in case.error_says:
        assert word in doc["error"], f"{case.name}: the error does not say {word!r}: {doc['error']}"
    return doc


def first_predictions(doc: dict) -> list[dict]:
    """The first image's predictions, from a single image's answer or a batch's."""
    preds = doc["predictions"]
    return preds[0] if isinstance(preds[0], list) else preds


def same_predictions(a: list[dict], b: list[dict]) -> bool:
    """Same classes in the same order with the same scores, up to float noise."""
    return [p["index"] for p in a] == [p["index"] for p in b] and all(
        abs(p["score"] - q["score"]) < 1e-5 for p, q in zip(a, b, strict=True)
    )


# -- building blocks -------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def scene(width: int = 48, height: int = 32) -> Image.Image:
    """An RGB image with no symmetry (gradients and one bright corner): turning it changes what a model sees."""
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 60)], axis=-1)
    arr[: height // 3, : width // 3] = (250, 250, 250)
    return Image.fromarray(arr.astype(np.uint8))


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: they compress badly, so truncating the file cuts into the pixel data."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def png(img: Image.Image) -> bytes:
    return encode(img, "PNG")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (8-bit greyscale) over a few bytes of pixel data."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(bytes(width + 1)[:64]))
        + png_chunk(b"IEND", b"")
    )


def jpeg_header_bomb(width: int, height: int) -> bytes:
    """A small baseline JPEG with its frame header (SOF0) rewritten to declare width x height."""
    data = bytearray(encode(scene(16, 16), "JPEG", quality=50))
    sof = data.index(b"\xff\xc0")
    # FFC0, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def exif_rotated_jpeg() -> tuple[bytes, bytes, bytes]:
    """(a JPEG tagged EXIF orientation 6, "rotate 90 degrees clockwise to display"; a PNG of its
    pixels as displayed; a PNG of its pixels as stored)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = encode(scene(48, 32), "JPEG", quality=95, exif=exif.tobytes())
    stored = Image.open(io.BytesIO(jpeg)).convert("RGB")
    return jpeg, png(stored.transpose(Image.Transpose.ROTATE_270)), png(stored)


def animated_gif() -> tuple[bytes, bytes, bytes]:
    """(a two-frame GIF, red then blue; a PNG of its first frame; a PNG of its last)."""
    frames = [Image.new("RGB", (40, 40), (220, 20, 20)), Image.new("RGB", (40, 40), (20, 20, 220))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return gif, png(frames[0]), png(frames[1])


def palette_png_with_transparency() -> bytes:
    """A palette PNG (mode P) whose index 0 is transparent (a tRNS chunk): alpha goes over white."""
    img = Image.new("P", (40, 30), 0)
    img.putpalette([0, 0, 0, 200, 30, 30] + [0] * (254 * 3))
    img.paste(1, (10, 5, 30, 25))
    return encode(img, "PNG", transparency=0)


def grey16_png() -> bytes:
    """A 16-bit greyscale PNG (Pillow mode I;16): values up to 65535, scaled to 8 bit by the server."""
    arr = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 54).astype(np.uint16)
    return png(Image.fromarray(arr))


def gif_zip_polyglot() -> bytes:
    """A GIF with a ZIP archive appended: a valid GIF (the trailer ends it) and a valid ZIP (read from its end)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("payload.js", "alert(document.domain)")
    return encode(scene(32, 32).convert("P"), "GIF") + archive.getvalue()


def gif_js_polyglot() -> bytes:
    """A GIF that is also JavaScript: its width bytes are `/*` (10799 px), so `GIF89a/*...*/=alert(1);`
    parses as a script, the binary inside a comment. The frame is small; the logical screen is wide."""
    data = bytearray(encode(scene(32, 32).convert("P"), "GIF"))
    data[:10] = b"GIF89a/*" + struct.pack("<H", 1000)  # 89a (Pillow writes 87a when it can); screen 10799 x 1000
    assert b"*/" not in data[8:]
    return bytes(data) + b"*/=alert(1);"


def png_with_trailing_html() -> bytes:
    """A PNG followed by an HTML page: Pillow stops at IEND, a browser sniffing the bytes may not."""
    return png(scene()) + b"<html><body><script>alert(1)</script></body></html>"


def svg() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<rect width="64" height="64" fill="red"/><script>alert(1)</script></svg>'
    )


def npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def instances(*b64: str) -> bytes:
    return json.dumps({"instances": [{"b64": item} for item in b64]}).encode()


def is_progressive(jpeg: bytes) -> bool:
    return b"\xff\xc2" in jpeg  # SOF2: progressive DCT


# -- the corpus ------------------------------------------------------------------------------
def _case(name: str, body: bytes, content_type: str, expected: int | set[int], why: str, **extra) -> Case:
    statuses = frozenset({expected} if isinstance(expected, int) else expected)
    return Case(name, body, content_type, statuses, why, **extra)


# 200 or a 400 that says why: another change decides; either way the answer is JSON.
EXTREME_ASPECT = frozenset({200, 400})
PIXEL_BOUND = ("60000x60000", "BYOC_MAX_IMAGE_PIXELS")


def build() -> list[Case]:
    """Every case, built fresh (a few hundred kilobytes in all)."""
    exif_jpeg, exif_displayed, exif_stored = exif_rotated_jpeg()
    gif, gif_first, gif_last = animated_gif()
    plain = png(scene())  # what the lossless encodings below must be served as
    progressive = encode(noise(64, 48), "JPEG", quality=85, progressive=True)
    assert is_progressive(progressive)
    return [
        # -- broken files ------------------------------------------------------------------
        _case(
            "truncated_jpeg",
            truncated(encode(noise(64, 64), "JPEG", quality=90)),
            "image/jpeg",
            400,
            "the header decodes, the scan data stops: an error, not half an image",
            error_says=("truncated",),
        ),
        _case(
            "truncated_png",
            truncated(png(noise(64, 64))),
            "image/png",
            400,
            "IDAT cut short, no IEND",
            error_says=("truncated",),
        ),
        _case("zero_bytes", b"", "image/jpeg", 400, "an empty body is not an image", error_says=("empty body",)),
        # -- valid images in less common encodings: all served ------------------------------
        _case("progressive_jpeg", progressive, "image/jpeg", 200, "SOF2 JPEG, as cameras and CDNs write"),
        _case("cmyk_jpeg", encode(scene().convert("CMYK"), "JPEG"), "image/jpeg", 200, "CMYK converted to RGB"),
        _case("grey16_png", grey16_png(), "image/png", 200, "16-bit greyscale (I;16) scaled to 8-bit RGB"),
        _case(
            "palette_png_transparency",
            palette_png_with_transparency(),
            "image/png",
            200,
            "mode P with a tRNS chunk: alpha over white",
        ),
        _case(
            "animated_gif",
            gif,
            "image/gif",
            200,
            "the first frame is served",
            same_as=gif_first,
            differs_from=gif_last,
        ),
        _case(
            "exif_rotated_jpeg",
            exif_jpeg,
            "image/jpeg",
            200,
            "EXIF orientation 6 is applied: the model sees the image upright",
            same_as=exif_displayed,
            differs_from=exif_stored,
        ),
        _case("one_pixel_png", png(Image.new("RGB", (1, 1), (90, 160, 30))), "image/png", 200, "1x1 upscaled"),
        _case("webp", encode(scene(), "WEBP", quality=90), "image/webp", 200, "WebP, which Pillow reads"),
        _case("tiff", encode(scene(), "TIFF"), "image/tiff", 200, "TIFF, which Pillow reads", same_as=plain),
        _case("bmp", encode(scene(), "BMP"), "image/bmp", 200, "BMP, which Pillow reads", same_as=plain),
        _case(
            "png_as_jpeg", png(scene()), "image/jpeg", 200, "a mislabelled image type: the bytes decide", same_as=plain
        ),
        # -- extreme aspect ratios: few pixels, but resizing the short side to the model's
        # size makes the long side huge (40000x1 -> 37 x 1.48 million for a 32 px model) --------
        _case(
            "png_40000x1",
            png(Image.new("RGB", (40000, 1), (200, 100, 0))),
            "image/png",
            EXTREME_ASPECT,
            "a 40000:1 strip",
        ),
        _case(
            "png_1x40000",
            png(Image.new("RGB", (1, 40000), (0, 100, 200))),
            "image/png",
            EXTREME_ASPECT,
            "a 1:40000 strip",
        ),
        _case(
            "jpeg_20000x8",
            encode(Image.new("RGB", (20000, 8), (30, 200, 90)), "JPEG"),
            "image/jpeg",
            EXTREME_ASPECT,
            "a 2500:1 JPEG banner",
        ),
        # -- decompression bombs: the header's size is refused before any pixel is decoded --
        _case(
            "jpeg_header_bomb",
            jpeg_header_bomb(60000, 60000),
            "image/jpeg",
            400,
            "SOF0 declares 3.6 billion pixels over a 1 KB body: the pixel bound",
            error_says=PIXEL_BOUND,
        ),
        _case(
            "png_header_bomb",
            png_header_bomb(60000, 60000),
            "image/png",
            400,
            "IHDR declares 3.6 billion pixels over a few bytes of IDAT: the pixel bound",
            error_says=PIXEL_BOUND,
        ),
        # -- not raster images, sent as image/*. An explicit choice: 400, not 415. The
        # content type is one the server accepts (any image/* Pillow reads), so the media
        # type is fine and the body is what cannot be decoded. ----------------------------
        _case(
            "svg_as_image",
            svg(),
            "image/svg+xml",
            400,
            "SVG is never rendered: an image/* type whose body Pillow cannot read",
            error_says=("cannot decode",),
        ),
        _case(
            "pdf_as_image",
            encode(scene(), "PDF"),
            "image/jpeg",
            400,
            "a real PDF (Pillow writes it, cannot read it) labelled image/jpeg",
            error_says=("cannot decode",),
        ),
        # -- polyglots: valid images with something else in them; the image is served -----
        _case(
            "gif_zip_polyglot",
            gif_zip_polyglot(),
            "image/gif",
            200,
            "a GIF and a ZIP at once (GIFAR): the GIF is read, the archive ignored",
        ),
        _case(
            "gif_js_polyglot",
            gif_js_polyglot(),
            "image/gif",
            200,
            "a GIF and a script at once: the GIF is read, the script never run",
        ),
        _case(
            "png_trailing_html",
            png_with_trailing_html(),
            "image/png",
            200,
            "bytes after IEND are ignored and never echoed",
            same_as=plain,
        ),
        # -- the other body types ---------------------------------------------------------
        _case(
            "json_b64",
            instances(base64.b64encode(png(scene())).decode()),
            "application/json",
            200,
            "the JSON instances body",
            same_as=plain,
        ),
        _case(
            "json_bad_base64",
            instances("not*base64!!"),
            "application/json",
            400,
            "characters outside the base64 alphabet",
            error_says=("base64",),
        ),
        _case(
            "npy_uint8_hwc",
            npy(np.asarray(scene(), dtype=np.uint8)),
            "application/x-npy",
            200,
            "a uint8 HWC array",
            same_as=plain,
        ),
        _case(
            "npy_pickled",
            npy(np.array([{"__reduce__": "os.system"}], dtype=object), allow_pickle=True),
            "application/x-npy",
            400,
            "an object array needs pickle, which is never loaded (arbitrary code)",
            error_says=("pickled",),
        ),
    ]


CASES = build()
GOOD = _case("good_png", png(scene(32, 32)), "image/png", 200, "a plain PNG: the server still predicts")
