"""SageMaker's batch-transform protocol on this machine: a folder of inputs through a running serving
container, outputs in the layout a transform job writes to S3 (`byoc batch-transform --local`).

The steps a transform job takes, in order: ask the container's /execution-parameters (the job's own
settings win), split each input object into records (SplitType=Line for JSON Lines, None for images
and archives), pack whole records into mini-batches up to MaxPayloadInMB (MultiRecord) or send one
each (SingleRecord), keep up to MaxConcurrentTransforms requests in flight, retry an invocation
that failed for want of an answer (5xx, no connection), and write `<key>.out`: the answers in input
order, each followed by a newline (AssembleWith=Line), or the one answer verbatim. Standard library
only, like the other local tools.
"""

from __future__ import annotations

import enum
import http.client
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from byoc.core.errors import ByocError, ConfigError, first_line
from byoc.core.files import atomic_write

JSONLINES = "application/jsonlines"
X_IMAGE = "application/x-image"
IMAGE_TYPES = ("image/jpeg", "image/png", X_IMAGE)
ARCHIVE_TYPES = ("application/x-tar", "application/gzip", "application/zip")
CONTENT_TYPES = (JSONLINES, *IMAGE_TYPES, *ARCHIVE_TYPES)
# Longest suffix first: "a.tar.gz" is an archive, not a gzip of something else.
EXTENSIONS = {
    ".tar.gz": "application/gzip",
    ".tgz": "application/gzip",
    ".tar": "application/x-tar",
    ".zip": "application/zip",
    ".jsonl": JSONLINES,
    ".jsonlines": JSONLINES,
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": X_IMAGE,
    ".bmp": X_IMAGE,
    ".webp": X_IMAGE,
    ".tif": X_IMAGE,
    ".tiff": X_IMAGE,
}
MB = 1024 * 1024
MAX_PAYLOAD_MB = 100  # CreateTransformJob's limit on MaxPayloadInMB
# What SageMaker uses when neither the job nor the container says (its documented defaults).
DEFAULT_CONCURRENCY = 1
DEFAULT_PAYLOAD_MB = 6
INVOCATION_TIMEOUT = 600.0  # ModelClientConfig.InvocationsTimeoutInSeconds' default
MAX_RETRIES = 3  # ModelClientConfig.InvocationsMaxRetries' default


def is_split(content_type: str) -> bool:
    """True for the content types a transform job splits into records (SplitType=Line)."""
    return content_type == JSONLINES


def accept_for(content_type: str) -> str:
    """The Accept a transform job sends (TransformOutput.Accept): one answer line per JSON Lines record."""
    return JSONLINES if is_split(content_type) else "application/json"


def content_type_of(path: Path) -> str | None:
    """The content type for a file's extension, or None for one a transform job here would not know."""
    name = path.name.lower()
    return next((kind for ext, kind in EXTENSIONS.items() if name.endswith(ext)), None)


def check_content_type(content_type: str | None) -> str | None:
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise ConfigError(f"--content-type {content_type!r}: expected one of {', '.join(CONTENT_TYPES)}")
    return content_type


def check_payload_mb(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_PAYLOAD_MB:
        raise ConfigError(f"--max-payload-mb {value}: must be between 1 and {MAX_PAYLOAD_MB} (SageMaker's limit)")
    return value


class Strategy(enum.Enum):
    """BatchStrategy, spelled as /execution-parameters spells it."""

    MULTI_RECORD = "MULTI_RECORD"
    SINGLE_RECORD = "SINGLE_RECORD"

    @classmethod
    def parse(cls, value: str) -> Strategy:
        """MULTI_RECORD or MultiRecord (the container's and CreateTransformJob's spellings)."""
        key = {"MULTIRECORD": "MULTI_RECORD", "SINGLERECORD": "SINGLE_RECORD"}.get(value.upper(), value.upper())
        try:
            return cls[key]
        except KeyError:
            raise ConfigError(f"batch strategy {value!r}: expected MultiRecord or SingleRecord") from None


@dataclass(frozen=True)
class Parameters:
    """The three settings a transform job runs with."""

    max_concurrent: int = DEFAULT_CONCURRENCY
    strategy: Strategy = Strategy.MULTI_RECORD
    max_payload_mb: int = DEFAULT_PAYLOAD_MB

    def __post_init__(self):
        if self.max_concurrent < 1:
            raise ConfigError(f"MaxConcurrentTransforms {self.max_concurrent}: must be >= 1")
        check_payload_mb(self.max_payload_mb)

    def line(self) -> str:
        return (
            f"MaxConcurrentTransforms={self.max_concurrent} BatchStrategy={self.strategy.value} "
            f"MaxPayloadInMB={self.max_payload_mb}"
        )


@dataclass
class Settings:
    """`byoc batch-transform --local`: where the container is, and what the flags override."""

    container: str  # http://127.0.0.1:PORT
    content_type: str | None = None  # None: from each file's extension
    max_payload_mb: int | None = None  # None: the container's /execution-parameters, else 6
    concurrency: int | None = None
    strategy: Strategy | None = None
    timeout: float = INVOCATION_TIMEOUT
    max_retries: int = MAX_RETRIES
    retry_delay: float = 1.0  # doubled after each failed attempt
    progress_every: float = 5.0  # seconds between progress lines

    def __post_init__(self):
        parts = urlsplit(self.container)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(f"--container {self.container!r}: expected http://HOST:PORT (the serving container)")
        self.container = self.container.rstrip("/")
        check_content_type(self.content_type)
        check_payload_mb(self.max_payload_mb)
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"--concurrency {self.concurrency}: must be >= 1")
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries {self.max_retries}: must be >= 0")


class ContainerError(ByocError):
    """The container refused a request, or gave no answer after the retries."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class FileFailed(ByocError):
    """One input file cannot be transformed; the others go on."""


# --- talking to the container ---


def _request(base: str, method: str, path: str, body: bytes | None, headers: dict, timeout: float):
    """(status, body) of one HTTP exchange; OSError or http.client.HTTPException when none came."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _reason(status: int, body: bytes) -> str:
    """The container's error, from its JSON `{"error", "status"}` body where it sent one."""
    try:
        doc = json.loads(body)
        message = doc["error"] if isinstance(doc, dict) and "error" in doc else body.decode(errors="replace")
    except ValueError:
        message = body.decode(errors="replace")
    message = " ".join(str(message).split())
    return f"{status}: {message[:300]}" if message else str(status)


def execution_parameters(base: str, timeout: float = 30.0) -> Parameters | None:
    """What the container asks for at GET /execution-parameters; None when it does not answer that path."""
    try:
        status, body = _request(base, "GET", "/ping", None, {}, timeout)
        if status != 200:
            raise ContainerError(f"the container at {base} is not ready: /ping answered {_reason(status, body)}")
        status, body = _request(base, "GET", "/execution-parameters", None, {}, timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise ContainerError(f"no container answers at {base}: {exc}") from exc
    if status == 404:
        return None
    if status != 200:
        raise ContainerError(f"the container's /execution-parameters answered {_reason(status, body)}")
    try:
        doc = json.loads(body)
        return Parameters(
            max_concurrent=int(doc["MaxConcurrentTransforms"]),
            strategy=Strategy.parse(str(doc["BatchStrategy"])),
            max_payload_mb=int(doc["MaxPayloadInMB"]),
        )
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        raise ContainerError(f"the container's /execution-parameters is not usable ({exc}): {body[:300]!r}") from exc


def resolve(settings: Settings, container: Parameters | None) -> Parameters:
    """The job's settings over the container's, over SageMaker's defaults."""
    base = container or Parameters()
    return Parameters(
        max_concurrent=settings.concurrency or base.max_concurrent,
        strategy=settings.strategy or base.strategy,
        max_payload_mb=settings.max_payload_mb or base.max_payload_mb,
    )


@dataclass
class Invoker:
    """POST /invocations with SageMaker's retries: a 5xx or no answer is tried again, a 4xx is final."""

    base: str
    timeout: float = INVOCATION_TIMEOUT
    max_retries: int = MAX_RETRIES
    retry_delay: float = 1.0
    calls: int = 0  # requests so far (each counted once, however often it was retried)
    retries: int = 0  # attempts after the first, all requests together
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, body: bytes, content_type: str, accept: str) -> bytes:
        headers = {"Content-Type": content_type, "Accept": accept}
        with self._lock:
            self.calls += 1
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
            try:
                status, answer = _request(self.base, "POST", "/invocations", body, headers, self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                problem, code = f"no answer ({type(exc).__name__}: {exc})", 0
                continue
            if status == 200:
                return answer
            problem, code = _reason(status, answer), status
            if status < 500:
                raise ContainerError(f"the container answered {problem}", status)
        raise ContainerError(f"the container gave {problem} after {self.max_retries + 1} attempt(s)", code)


# --- splitting and packing ---


def records(data: bytes) -> list[bytes]:
    """The records of a JSON Lines object (SplitType=Line): every line, blank ones too, without line
    ends; the newline that ends the last line starts none, and an empty object has none. The server
    answers a blank line with an error line, so output line N always answers input line N."""
    lines = data.split(b"\n") if data else []
    if lines and not lines[-1]:
        lines.pop()
    return [line.rstrip(b"\r") for line in lines]


def _cost(item: bytes) -> int:
    """A record's bytes in a request; an empty one counts the newline that may have to end it (`joined`)."""
    return len(item) or 1


def joined(batch: list[bytes]) -> bytes:
    """A mini-batch's body: its records joined by newlines. One that ends with an empty record ends
    with a newline too, or the server would read that last newline as ending the line before it."""
    body = b"\n".join(batch)
    return body + b"\n" if len(batch) > 1 and not batch[-1] else body


def pack(items: list[bytes], params: Parameters) -> list[list[bytes]]:
    """Whole records in mini-batches of at most MaxPayloadInMB, joined by newlines (MultiRecord),
    or one record each (SingleRecord). A record over the limit fails, as it fails a transform job."""
    limit = params.max_payload_mb * MB
    batches: list[list[bytes]] = []
    size = 0
    for number, item in enumerate(items, 1):
        if len(item) > limit:
            raise FileFailed(
                f"record {number} is {len(item) / MB:.1f} MB, over MaxPayloadInMB={params.max_payload_mb} "
                f"(a transform job fails it too; --max-payload-mb goes up to {MAX_PAYLOAD_MB})"
            )
        # + 1: the newline joining it to the batch
        if params.strategy is Strategy.MULTI_RECORD and batches and size + 1 + _cost(item) <= limit:
            batches[-1].append(item)
            size += 1 + _cost(item)
        else:
            batches.append([item])
            size = _cost(item)
    return batches


# --- the run ---


@dataclass
class _File:
    """One input object on its way through: its requests, and their answers in input order."""

    relative: str
    output: Path
    content_type: str
    batches: list[list[bytes]]
    answers: list[bytes | None] = field(default_factory=list)
    left: int = 0
    error: str | None = None

    def __post_init__(self):
        self.answers = [None] * len(self.batches)
        self.left = len(self.batches)

    def body(self, index: int) -> bytes:
        return joined(self.batches[index])

    def assemble(self) -> bytes:
        if is_split(self.content_type):  # AssembleWith=Line: each answer, then a newline
            return b"".join(answer + b"\n" for answer in self.answers if answer is not None)
        return self.answers[0] or b""


@dataclass
class Summary:
    files: int = 0  # with a content type (from --content-type or the extension)
    written: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # relative path -> why
    skipped: list[str] = field(default_factory=list)  # no known content type
    records: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0


def inputs(input_dir: Path, output_dir: Path) -> list[Path]:
    """Every file under `input_dir`, in a stable order; hidden files and `output_dir` left out."""
    out = output_dir.resolve()
    found = []
    for path in sorted(input_dir.rglob("*")):
        relative = path.relative_to(input_dir)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if not path.resolve().is_relative_to(out):
            found.append(path)
    return found


class Run:
    """One `byoc batch-transform --local` over a folder: the requests of every file share one pool."""

    def __init__(self, input_dir: Path, output_dir: Path, settings: Settings, say: Callable[[str], None]):
        self.input_dir, self.output_dir, self.settings, self.say = input_dir, output_dir, settings, say
        self.summary = Summary()
        self.invoke = Invoker(settings.container, settings.timeout, settings.max_retries, settings.retry_delay)
        self.done = 0
        self._lock = threading.Lock()
        self._start = self._last_progress = time.monotonic()

    def execute(self, params: Parameters) -> Summary:
        todo = []
        for path in inputs(self.input_dir, self.output_dir):
            kind = self.settings.content_type or content_type_of(path)
            if kind is None:
                self.summary.skipped.append(path.relative_to(self.input_dir).as_posix())
            else:
                todo.append((path, kind))
        self.summary.files = len(todo)
        # At most two requests per worker wait in the queue, so files are read as the pool drains.
        slots = threading.BoundedSemaphore(2 * params.max_concurrent)
        with ThreadPoolExecutor(params.max_concurrent, thread_name_prefix="transform") as pool:
            for path, kind in todo:
                item = self._prepare(path, kind, params)
                if item is None:
                    continue
                for index in range(len(item.batches)):
                    slots.acquire()
                    pool.submit(self._one, item, index).add_done_callback(lambda _: slots.release())
        self.summary.requests, self.summary.retries = self.invoke.calls, self.invoke.retries
        self.summary.seconds = time.monotonic() - self._start
        self.progress(final=True)
        return self.summary

    def _prepare(self, path: Path, kind: str, params: Parameters) -> _File | None:
        """The file read and cut into its requests; None when it failed already (too large, unreadable)."""
        relative = path.relative_to(self.input_dir).as_posix()
        try:
            data = path.read_bytes()
            if is_split(kind):
                batches = pack(records(data), params)
            elif len(data) > params.max_payload_mb * MB:
                raise FileFailed(
                    f"{len(data) / MB:.1f} MB, over MaxPayloadInMB={params.max_payload_mb} (an unsplit object is "
                    f"one request; --max-payload-mb goes up to {MAX_PAYLOAD_MB})"
                )
            else:
                batches = [[data]]
        except (OSError, FileFailed) as exc:
            self._failed(relative, str(exc))
            return None
        with self._lock:
            self.summary.records += sum(len(b) for b in batches)
        item = _File(relative, self.output_dir / f"{relative}.out", kind, batches)
        if not batches:  # an empty JSON Lines file: an empty output, as a transform job writes
            self._finish(item)
            return None
        return item

    def _one(self, item: _File, index: int) -> None:
        try:
            if item.error is None:  # once one request of a file failed, its others are not sent
                answer = self.invoke(item.body(index), item.content_type, accept_for(item.content_type))
                lines, sent = answer.count(b"\n") + 1, len(item.batches[index])
                if is_split(item.content_type) and lines != sent:
                    raise ContainerError(
                        f"the container answered {lines} line(s) for {sent} record(s) (the contract: one line "
                        "per record)"
                    )
                item.answers[index] = answer
        except Exception as exc:  # one file's failure, whatever it is, must not stop the others
            with self._lock:
                item.error = item.error or (str(exc) if isinstance(exc, ByocError) else first_line(exc))
        finally:
            with self._lock:
                item.left -= 1
                last = item.left == 0
            if last:
                self._finish(item)

    def _finish(self, item: _File) -> None:
        if item.error is not None:
            self._failed(item.relative, item.error)
            return
        try:
            item.output.parent.mkdir(parents=True, exist_ok=True)
            data = item.assemble()
            atomic_write(item.output, lambda fh: fh.write(data))
        except OSError as exc:
            self._failed(item.relative, f"cannot write {item.output}: {exc}")
            return
        with self._lock:
            self.summary.written += 1
            self.done += 1
        self.progress()

    def _failed(self, relative: str, why: str) -> None:
        with self._lock:
            self.summary.failed[relative] = why
            self.done += 1
        self.say(f"  failed: {relative}: {why}")
        self.progress()

    def progress(self, final: bool = False) -> None:
        """A progress line, at most one per `progress_every` seconds (and always the final one)."""
        now = time.monotonic()
        with self._lock:
            if not final and now - self._last_progress < self.settings.progress_every:
                return
            self._last_progress = now
            s = self.summary
            line = (
                f"  {self.done}/{s.files} files, {s.records} records, {self.invoke.calls} requests, "
                f"{len(s.failed)} failed, {self.invoke.retries} retries ({now - self._start:.1f} s)"
            )
        self.say(line)


def run(input_dir: Path, output_dir: Path, settings: Settings, say: Callable[[str], None] = print) -> Summary:
    """Transform every file under `input_dir` into `output_dir` as a transform job would. Raises
    FileFailed after the summary when any file failed (each named, with the container's reason)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise ConfigError(f"--local INPUT_DIR {str(input_dir)!r} is not a folder")
    container = execution_parameters(settings.container)
    params = resolve(settings, container)
    given = [
        flag
        for flag, value in (
            ("--concurrency", settings.concurrency),
            ("--max-payload-mb", settings.max_payload_mb),
            ("--batch-strategy", settings.strategy),
        )
        if value is not None
    ]
    source = "the container's /execution-parameters" if container else "SageMaker's defaults (no /execution-parameters)"
    say(
        f"batch transform {input_dir} -> {output_dir} through {settings.container}: {params.line()} (from {source}"
        f"{''.join(f', {flag}' for flag in given)}); content type {settings.content_type or 'by file extension'}"
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = Run(input_dir, output_dir, settings, say).execute(params)
    say(_summary_line(summary, output_dir))
    if summary.failed:
        first, why = sorted(summary.failed.items())[0]
        raise FileFailed(
            f"{len(summary.failed)} of {summary.files} input file(s) failed, no .out written for them; "
            f"first: {first}: {why}"
        )
    return summary


def _summary_line(s: Summary, output_dir: Path) -> str:
    line = (
        f"batch transform: {s.written} of {s.files} file(s) written under {output_dir}, {len(s.failed)} failed; "
        f"{s.records} records in {s.requests} requests, {s.retries} retries, {s.seconds:.1f} s"
    )
    if s.skipped:
        names = ", ".join(s.skipped[:5]) + (" ..." if len(s.skipped) > 5 else "")
        line += f"; {len(s.skipped)} skipped (no known extension; --content-type sends every file as one type): {names}"
    return line
