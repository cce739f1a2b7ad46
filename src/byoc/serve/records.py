"""Many images in one request, as SageMaker batch transform sends them: JSON Lines (one
`{"b64": ...}` object per line) and tar, gzipped tar and zip archives, split into single-image
requests, and their answers put together again, one per record, in order.

Archives are read from the body in memory, member by member, and nothing is written to disk.
Whatever an archive claims, what it may cost is bounded by the constants below: records and
entries per request, bytes per member (the payload limit), uncompressed bytes in all, and the
compression ratio. Decompression is streamed (gzip through a bounded zlib reader under tarfile's
"r|" stream mode; zip members in 64 KiB reads, deflate or stored only), so memory stays within a
few payloads. A member that is itself an archive is not opened.

Standard library only: the front imports this and must never load torch, numpy or PIL.
"""

from __future__ import annotations

import base64
import binascii
import enum
import io
import json
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from byoc.serve import negotiation
from byoc.serve.batching import Answer, Part
from byoc.serve.headers import ACCEPT, CONTENT_TYPE, CUSTOM_ATTRIBUTES
from byoc.serve.http_errors import (
    JSON_CONTENT_TYPE,
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    RequestError,
    to_response,
)

MAX_RECORDS = 10_000  # images per request: lines, or an archive's regular files and refused members
MAX_ENTRIES = 2 * MAX_RECORDS  # an archive's entries of any kind, directories included
TOTAL_FACTOR = 4  # an archive's uncompressed bytes: at most this many times the payload limit
MAX_RATIO = 100  # uncompressed : compressed bytes, once RATIO_FLOOR bytes have come out
RATIO_FLOOR = 8 * 2**20  # small archives of flat images may compress far better than photos do
READ_CHUNK = 64 * 1024  # compressed input per zlib call, and output per zip member read
RECORD_CONTENT_TYPE = "application/x-image"  # what each record is sent to the handler as

JSON_LINES = "application/jsonlines"
JSON_LINES_TYPES = (JSON_LINES, "application/x-jsonlines", "application/jsonl")
LINE_USAGE = 'send one {"b64": "<base64 image>"} object per line'
NESTED = "nested archives are not opened"


class Kind(enum.Enum):
    """A multi-record body, by its media types; the first is its name in messages."""

    JSON_LINES = JSON_LINES_TYPES
    TAR = ("application/x-tar",)
    GZIP_TAR = ("application/gzip", "application/x-gzip")
    ZIP = ("application/zip", "application/x-zip-compressed")

    @property
    def response_type(self) -> str:
        """JSON Lines are answered line for line; archives as one JSON object, member name -> answer."""
        return JSON_LINES if self is Kind.JSON_LINES else JSON_CONTENT_TYPE

    @property
    def acceptable(self) -> tuple[str, ...]:
        """The Accept media types the response satisfies."""
        own = JSON_LINES_TYPES if self is Kind.JSON_LINES else ()
        return ("*/*", "application/*", JSON_CONTENT_TYPE, *own)

    @property
    def label(self) -> str:
        return {Kind.JSON_LINES: "JSON Lines", Kind.TAR: "tar", Kind.GZIP_TAR: "gzipped tar", Kind.ZIP: "zip"}[self]


def kind_of(content_type: str | None) -> Kind | None:
    """The multi-record kind of a Content-Type (parameters and case ignored); None for any other."""
    mtype = (content_type or "").split(";", 1)[0].strip().lower()
    return next((kind for kind in Kind if mtype in kind.value), None)


@dataclass(frozen=True)
class Limits:
    """What one multi-record request may hold."""

    record_bytes: int  # one image: a decoded line, an archive member (the payload limit)
    total_bytes: int  # an archive's uncompressed bytes in all
    records: int = MAX_RECORDS
    entries: int = MAX_ENTRIES

    @classmethod
    def for_payload(cls, payload_bytes: int) -> Limits:
        """The limits for a body limit (SAGEMAKER_MAX_PAYLOAD_IN_MB) of `payload_bytes`."""
        return cls(record_bytes=payload_bytes, total_bytes=TOTAL_FACTOR * payload_bytes)


@dataclass(frozen=True)
class Record:
    """One image of a request: its bytes, or why it has none (answered without a worker)."""

    name: str  # an archive member's name; for JSON Lines, "line N"
    image: bytes = b""
    error: RequestError | None = None


# -- the request as a whole ------------------------------------------------------------------
def check_accept(kind: Kind, header: str | None) -> None:
    """Accept: absent, */*, application/*, application/json or the response's own type (q=0
    excluded); else NotAcceptable for the whole request."""
    if not negotiation.accepts(header, kind.acceptable):
        raise NotAcceptable(f"cannot answer with Accept {header!r}: this request's response is {kind.response_type}")


def check_top_k(custom_attributes: str | None) -> None:
    """BadRequest unless every `top_k=N` in X-Amzn-SageMaker-Custom-Attributes is a positive integer:
    the rule byoc.serve.codec.parse_top_k applies per image, checked once for the whole request."""
    negotiation.top_k(custom_attributes, default=1)


def record_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers each record is sent with: an image, answered as JSON, the client's top_k."""
    out = {CONTENT_TYPE: RECORD_CONTENT_TYPE, ACCEPT: JSON_CONTENT_TYPE}
    if headers.get(CUSTOM_ATTRIBUTES) is not None:
        out[CUSTOM_ATTRIBUTES] = headers[CUSTOM_ATTRIBUTES]
    return out


def answer(
    body: bytes, headers: Mapping[str, str], limits: Limits, submit_many: Callable[[Iterable[Part]], list[Answer]]
) -> tuple[str, bytes]:
    """(content type, body) of the 200 for a multi-record request, each record answered by
    `submit_many` (byoc.serve.batching.Batcher.submit_many) as a single-image request, or from here
    when it cannot be one. RequestError for a request refused whole (406, a bad top_k, a body that is
    not what it says, a limit passed)."""
    kind = kind_of(headers.get(CONTENT_TYPE))
    if kind is None:
        raise ValueError(f"not a multi-record content type: {headers.get(CONTENT_TYPE)!r}")
    check_accept(kind, headers.get(ACCEPT))
    check_top_k(headers.get(CUSTOM_ATTRIBUTES))
    sent_with = record_headers(headers)
    names: list[str] = []
    refused: dict[int, Answer] = {}

    def parts() -> Iterator[Part]:  # drawn lazily by submit_many: records decode as they are sent
        for index, record in enumerate(split(kind, body, limits)):
            names.append(record.name)
            if record.error is not None:
                refused[index] = to_response(record.error)
            else:
                yield record.image, sent_with

    sent = iter(submit_many(parts()))
    if not names:
        raise BadRequest(f"the {kind.label} body holds no images: {_usage(kind)}")
    answers = [refused[i] if i in refused else next(sent) for i in range(len(names))]
    _fail_whole_on_server_error(names, answers)
    return kind.response_type, assemble(kind, names, answers)


def _fail_whole_on_server_error(names: list[str], answers: list[Answer]) -> None:
    """A record the server failed (a worker died, a timeout: 5xx) fails the whole request with that
    status: batch transform and other clients retry a failed request, but a 200 with an error line
    inside would lose that image's prediction for good. Client errors (4xx) stay per record."""
    for name, (status, body) in zip(names, answers, strict=True):
        if status >= 500:
            try:
                message = json.loads(body).get("error", "")
            except (ValueError, AttributeError):
                message = ""
            error = RequestError(f"{name}: {message or 'the server failed this record'}; retry the request")
            error.status = status
            raise error


def assemble(kind: Kind, names: list[str], answers: list[Answer]) -> bytes:
    """JSON Lines: one answer body per line, joined by "\\n" with none after the last (batch
    transform's AssembleWith=Line adds it). Archives: {"member": answer body, ...} in archive order."""
    bodies = [_one_line(body) for _, body in answers]
    if kind is Kind.JSON_LINES:
        return b"\n".join(bodies)
    return (
        b"{"
        + b", ".join(json.dumps(name).encode() + b": " + body for name, body in zip(names, bodies, strict=True))
        + b"}"
    )


def _one_line(body: bytes) -> bytes:
    """A JSON answer body on one line (the handler's and the front's already are)."""
    return json.dumps(json.loads(body)).encode() if b"\n" in body or b"\r" in body else body


def _usage(kind: Kind) -> str:
    if kind is Kind.JSON_LINES:
        return LINE_USAGE
    return f"send a {kind.label} archive of image files"


# -- splitting a body into records -----------------------------------------------------------
def split(kind: Kind, body: bytes, limits: Limits) -> Iterator[Record]:
    """The body's records, in order, decoded as they are drawn. Raises RequestError when the body
    is not a valid `kind` (400) or passes a limit (413), at the point where that shows."""
    if kind is Kind.JSON_LINES:
        return _json_lines(body, limits)
    if kind is Kind.ZIP:
        return _zip(body, limits)
    budget = _Budget(limits)
    source = io.BytesIO(body) if kind is Kind.TAR else _Gunzip(body, budget)
    return _tar(source, kind, limits, budget)


def _lines(body: bytes) -> list[bytes]:
    """The body's lines, split at "\\n": a newline ends a line, so one at the very end adds none. An
    empty body is one empty line: batch transform (SplitType=Line, SingleRecord) sends a blank line of
    its input as a request of its own, and it is answered, like every line, with one line."""
    lines = body.split(b"\n")
    return lines[:-1] if len(lines) > 1 and not lines[-1] else lines


def _json_lines(body: bytes, limits: Limits) -> Iterator[Record]:
    """One record per line, blank lines included (each answered with its own error line), so that
    answer N is always line N's: batch transform's output is read by line number."""
    if body.count(b"\n", 0, len(body) - 1) >= limits.records:
        raise PayloadTooLarge(f"more than {limits.records} lines in one request: send fewer images per request")
    for number, line in enumerate(_lines(body), 1):
        yield _line_record(number, line)


def _line_record(number: int, line: bytes) -> Record:
    name = f"line {number}"

    def refused(message: str) -> Record:
        return Record(name, error=BadRequest(f"{name}: {message}"))

    if not line.strip():
        return refused("empty line")
    try:
        doc = json.loads(line)
    except ValueError as exc:  # UnicodeDecodeError included
        return refused(f"not valid JSON ({exc}): {LINE_USAGE}")
    if isinstance(doc, dict) and "url" in doc and "b64" not in doc:
        return refused(f"the server never fetches URLs: {LINE_USAGE}")
    if not isinstance(doc, dict) or not isinstance(doc.get("b64"), str):
        return refused(f"no 'b64' string: {LINE_USAGE}")
    try:
        image = base64.b64decode(doc["b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        return refused(f"b64 is not valid base64 ({exc})")
    if not image:
        return refused("b64 is empty")
    return Record(name, image)


class _Budget:
    """An archive's uncompressed bytes so far, against the total and the compression ratio."""

    def __init__(self, limits: Limits):
        self.limits, self.out = limits, 0

    def add(self, out: int, compressed: int) -> None:
        """`out` more bytes came out of the archive, whose `compressed` bytes have been read so far."""
        self.out += out
        _check_expansion(self.out, compressed, self.limits, "expands")


def _check_expansion(out: int, compressed: int, limits: Limits, verb: str) -> None:
    """PayloadTooLarge when `out` uncompressed bytes from `compressed` pass the total or the ratio."""
    if out > limits.total_bytes:
        raise PayloadTooLarge(
            f"the archive {verb} past {limits.total_bytes} bytes ({TOTAL_FACTOR} x the payload limit, "
            "SAGEMAKER_MAX_PAYLOAD_IN_MB): send fewer or smaller images per request"
        )
    if out > RATIO_FLOOR and out > MAX_RATIO * compressed:
        raise PayloadTooLarge(
            f"the archive {verb} more than {MAX_RATIO}:1 ({compressed} compressed bytes give {out}): "
            "not read further (an archive bomb?)"
        )


class _Gunzip:
    """A gzip body, decompressed as tarfile reads it: at most the bytes asked for per read (zlib's
    max_length), every byte counted by the budget. Concatenated gzip members are one stream, as
    gzip(1) reads them; zero padding after the last is ignored."""

    def __init__(self, body: bytes, budget: _Budget):
        self.body, self.budget = memoryview(body), budget
        self.fed = 0  # compressed bytes handed to zlib
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16: a gzip header and trailer
        self.pending = b""  # compressed bytes zlib has not taken yet

    def drain(self) -> None:
        """Read (and count) what is left after the tar's end, to the gzip trailer."""
        while self.read(READ_CHUNK):
            pass

    def read(self, size: int = READ_CHUNK) -> bytes:
        size = size if size and size > 0 else READ_CHUNK
        while True:
            if not self.pending:
                if self.fed >= len(self.body):
                    if not self.inflater.eof:
                        raise BadRequest("the gzip stream is truncated: send a complete gzipped tar archive")
                    return b""
                self.pending = bytes(self.body[self.fed : self.fed + READ_CHUNK])
                self.fed += len(self.pending)
            if self.inflater.eof:  # between members: zero padding is skipped, anything else starts one
                self.pending = self.pending.lstrip(b"\0")
                if not self.pending:
                    continue
                self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self.inflater.decompress(self.pending, size)
            except zlib.error as exc:
                raise BadRequest(f"body is not valid gzip ({exc}): send a gzipped tar archive") from None
            self.pending = self.inflater.unused_data + self.inflater.unconsumed_tail
            if out:
                self.budget.add(len(out), self.fed)
                return out


def _nested(data: bytes) -> bool:
    """Whether a member is itself an archive or compressed stream (gzip, zip, bzip2, xz, zstd, tar)."""
    return (
        data[:2] == b"\x1f\x8b"
        or data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"(\xb5/\xfd")
        or data[:3] == b"BZh"
        or data[:6] == b"\xfd7zXZ\x00"
        or data[257:262] == b"ustar"
    )


def _member(name: str, data: bytes) -> Record:
    return Record(name, error=BadRequest(f"{name}: {NESTED}")) if _nested(data) else Record(name, data)


class _Names:
    """Member names, each once (they are the answer's keys), and the record and entry counts."""

    def __init__(self, limits: Limits):
        self.limits, self.entries = limits, 0
        self.seen: set[str] = set()

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.entries:
            raise PayloadTooLarge(f"the archive has more than {self.limits.entries} entries: send fewer per request")

    def record(self, name: str) -> None:
        if name in self.seen:
            raise BadRequest(f"the archive holds {name!r} twice: member names are the answer's keys")
        self.seen.add(name)
        if len(self.seen) > self.limits.records:
            raise PayloadTooLarge(f"the archive has more than {self.limits.records} files: send fewer per request")


def _too_large(name: str, size: int, limits: Limits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{name} is {size} bytes, over the limit of {limits.record_bytes} per image (SAGEMAKER_MAX_PAYLOAD_IN_MB)"
    )


# What tarfile and zlib raise for a body that is not what it says.
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error)


def _tar(source: io.BytesIO | _Gunzip, kind: Kind, limits: Limits, budget: _Budget) -> Iterator[Record]:
    def invalid(exc: Exception) -> BadRequest:
        return BadRequest(f"body is not a valid {kind.label} archive ({exc}): {_usage(kind)}")

    try:
        archive = _open_tar(source)
    except _ARCHIVE_ERRORS as exc:
        raise invalid(exc) from None
    with archive:
        members, names = iter(archive), _Names(limits)
        while True:
            try:
                member = next(members, None)
            except _ARCHIVE_ERRORS as exc:
                raise invalid(exc) from None
            if member is None:
                if isinstance(source, _Gunzip):  # to its end: the CRC and length trailer are checked
                    source.drain()
                return
            names.entry()
            if member.isdir():
                continue
            names.record(member.name)
            problem = _tar_problem(member)
            if problem:
                yield Record(member.name, error=BadRequest(f"{member.name}: {problem}"))
                continue
            if member.size > limits.record_bytes:
                raise _too_large(member.name, member.size, limits)
            try:
                data = archive.extractfile(member).read()  # type: ignore[union-attr]  # a regular file has data
            except _ARCHIVE_ERRORS as exc:
                raise invalid(exc) from None
            if isinstance(source, io.BytesIO):  # the gzip reader counts its own output
                budget.add(len(data), source.tell())
            yield _member(member.name, data)


def _open_tar(source: io.BytesIO | _Gunzip) -> tarfile.TarFile:
    """Stream mode ("r|"): one pass, forward only, nothing seeks back or reads ahead of a member."""
    return tarfile.open(fileobj=source, mode="r|")  # type: ignore[call-overload]  # _Gunzip: read() only


def _tar_problem(member: tarfile.TarInfo) -> str | None:
    """Why a (non-directory) member is not read as an image, or None for a regular file."""
    if member.issym() or member.islnk():
        return "is a link: only regular files are read"
    if member.issparse():
        return "is a sparse file: only regular files are read"
    if not member.isreg():
        return "is not a regular file (a device, FIFO or other special file): only regular files are read"
    return None


def _zip(body: bytes, limits: Limits) -> Iterator[Record]:
    def invalid(exc: Exception) -> BadRequest:
        return BadRequest(f"body is not a valid zip archive ({exc}): {_usage(Kind.ZIP)}")

    entries = _zip_entries(body, limits.entries)
    if entries > limits.entries:
        raise PayloadTooLarge(f"the archive has more than {limits.entries} entries: send fewer per request")
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except _ARCHIVE_ERRORS as exc:
        raise invalid(exc) from None
    _check_declared(archive.infolist(), len(body), limits)
    budget, names = _Budget(limits), _Names(limits)
    for info in archive.infolist():
        names.entry()
        if info.is_dir():
            continue
        names.record(info.filename)
        problem = _zip_problem(info)
        if problem:
            yield Record(info.filename, error=BadRequest(f"{info.filename}: {problem}"))
            continue
        try:  # within its declared size, which _check_declared bounded
            data = _read_member(archive, info, budget, len(body))
        except _ARCHIVE_ERRORS as exc:
            yield Record(info.filename, error=BadRequest(f"{info.filename}: cannot be read ({exc})"))
            continue
        yield _member(info.filename, data)


def _check_declared(infos: list[zipfile.ZipInfo], body_bytes: int, limits: Limits) -> None:
    """A zip's bombs refused from its central directory, before any member is read or sent: zipfile
    reads no member past its declared size, so what the directory declares bounds what comes out."""
    files = [info for info in infos if not info.is_dir() and _zip_problem(info) is None]
    for info in files:
        if info.file_size > limits.record_bytes:
            raise _too_large(info.filename, info.file_size, limits)
    packed = min(body_bytes, sum(info.compress_size for info in files))  # shared (overlapping) data counts once
    _check_expansion(sum(info.file_size for info in files), packed, limits, "declares")


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a (non-directory) zip member is not read as an image, or None."""
    # Unix zips (create_system 3) keep the mode; a type of 0 (permissions only) is a plain file.
    mode = info.external_attr >> 16 if info.create_system == 3 else 0
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        if stat.S_ISLNK(mode):
            return "is a symbolic link: only regular files are read"
        return "is not a regular file (a device, FIFO or other special file): only regular files are read"
    if info.flag_bits & 0x1:
        return "is encrypted: send it unencrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2 and LZMA decompress without an output bound per read in zipfile: refused, not read.
        return f"is compressed with method {info.compress_type}: only stored and deflate members are read"
    return None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, compressed: int) -> bytes:
    """A member's bytes, READ_CHUNK at a time; zipfile stops at its declared size (checked against the
    limit first) and checks its CRC."""
    chunks = []
    with archive.open(info) as member:
        while chunk := member.read(READ_CHUNK):
            budget.add(len(chunk), compressed)
            chunks.append(chunk)
    return b"".join(chunks)


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory: ..., entries, size, offset, comment length
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory: ..., entries, size, offset
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # a central directory header; name, extra, comment follow


def _zip_entries(body: bytes, most: int) -> int:
    """The central directory's entries, counted up to most + 1 without building them (zipfile builds
    an object per entry, however many the directory holds); 0 where the directory cannot be found
    (zipfile then says what is wrong)."""
    end = body.rfind(b"PK\x05\x06", max(0, len(body) - _EOCD.size - 0xFFFF))
    if end < 0 or end + _EOCD.size > len(body):
        return 0
    size = _EOCD.unpack_from(body, end)[5]
    start = end - size
    locator = end - _EOCD64_LOCATOR.size
    if locator >= 0 and body[locator : locator + 4] == b"PK\x06\x07":
        record = locator - _EOCD64.size
        if record < 0 or body[record : record + 4] != b"PK\x06\x06":
            return 0
        size = _EOCD64.unpack_from(body, record)[7]
        start = record - size
    count, pos = 0, max(start, 0)
    while count <= most and pos + _CENTRAL.size <= len(body) and body[pos : pos + 4] == b"PK\x01\x02":
        fields = _CENTRAL.unpack_from(body, pos)
        pos += _CENTRAL.size + fields[12] + fields[13] + fields[14]
        count += 1
    return count
