"""Typed request errors and the one place that turns them into HTTP status codes and JSON bodies."""

from __future__ import annotations

import json

from byoc.core.errors import ImageError
from byoc.core.errors import ImageTooLarge as ImageOverLimit


class RequestError(Exception):
    """A request the server cannot answer; `status` is its HTTP status code."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    """Undecodable image, bad JSON or npy, bad parameter."""

    status = 400


class ImageTooLarge(BadRequest):
    """An image whose header declares more pixels than allowed (a decompression bomb)."""


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class NotAcceptable(RequestError):
    status = 406


class Unavailable(RequestError):
    """No worker can answer right now (starting, draining or crashed)."""

    status = 503


class Internal(RequestError):
    """A bug or a resource failure; the details go to the log, never to the client."""

    status = 500


JSON_CONTENT_TYPE = "application/json"


def image_rejected(exc: ImageError, where: str = "") -> BadRequest:
    """The 400 for an image the shared opener (byoc.core.images) refused; `where` prefixes
    the message (e.g. "instances[2]: ")."""
    kind = ImageTooLarge if isinstance(exc, ImageOverLimit) else BadRequest
    return kind(f"{where}{exc}")


def body(status: int, message: str) -> bytes:
    """The JSON error body every error response carries."""
    return json.dumps({"error": message, "status": status}).encode()


def to_response(exc: RequestError) -> tuple[int, bytes]:
    """(status, JSON body) for a typed error."""
    return exc.status, body(exc.status, exc.message)


def is_error_body(data: bytes) -> bool:
    """True when `data` already is one of our JSON error bodies."""
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and set(doc) == {"error", "status"}
