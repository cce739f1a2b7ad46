"""Dynamic batching at the front: requests that arrive while every model worker is busy go to
the next free worker together, as one model-server request, and are answered one by one.

multi-model-server's own batching is not safe to use: 1.1.11's decoder of worker answers
fails when a batched answer reaches it in two reads and the split lands inside a per-request
header, and the worker is dropped (docs/guides/serving.md, "Dynamic batching"). So MMS always runs at batch size 1
and the batch travels inside one request: `pack_requests` frames the parts (each with its
own headers), the handler answers with `pack_answers` (each part with its own status), and
MMS sees one small answer header, as for a single request.

Nothing waits for a batch to fill unless `max_delay` says so: a request that finds a worker
free goes at once and alone, exactly as it came. Only this module, the front and the handler
know the framing; the front never forwards a client's BATCH_HEADER (byoc.serve.headers.BATCH).

Standard library only: the front imports this and must stay free of torch.
"""

from __future__ import annotations

import collections
import json
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from byoc.serve.headers import BATCH as BATCH_HEADER  # value: the number of framed parts in the body
from byoc.serve.headers import CONTENT_TYPE
from byoc.serve.http_errors import body

log = logging.getLogger(__name__)

FRAMED_CONTENT_TYPE = "application/x-byoc-batch"
_LEN = struct.Struct("!I")
_ANSWER = struct.Struct("!HI")  # status, body length

Answer = tuple[int, bytes]  # (HTTP status, body)
Send = Callable[[bytes, dict], Answer]  # one model-server request: (body, headers) -> answer
Part = tuple[bytes, dict[str, str]]  # one request of many: (body, headers)
# How many requests of one submit_many are in flight at once, in multiples of slots x max_batch:
# every worker busy with a full batch, and a full batch waiting behind each.
WINDOW_FACTOR = 2


def _take(data: memoryview, offset: int, what: str) -> tuple[bytes, int]:
    if offset + _LEN.size > len(data):
        raise ValueError(f"truncated batch: no length for {what} at byte {offset}")
    (size,) = _LEN.unpack_from(data, offset)
    start = offset + _LEN.size
    if start + size > len(data):
        raise ValueError(f"truncated batch: {what} needs {size} bytes at byte {start}, {len(data) - start} left")
    return bytes(data[start : start + size]), start + size


def pack_requests(parts: list[tuple[dict[str, str], bytes]]) -> bytes:
    """[(headers, body), ...] -> one body: per part, the length-prefixed JSON headers and body."""
    out = bytearray()
    for headers, payload in parts:
        head = json.dumps(headers).encode()
        out += _LEN.pack(len(head)) + head + _LEN.pack(len(payload)) + payload
    return bytes(out)


def unpack_requests(data: bytes, count: int) -> list[tuple[dict[str, str], bytes]]:
    """The inverse of pack_requests; ValueError unless `data` holds exactly `count` well-formed parts."""
    if count < 1:
        raise ValueError(f"a batch holds at least one part, not {count}")
    view, offset, parts = memoryview(data), 0, []
    for i in range(count):
        head, offset = _take(view, offset, f"part {i}'s headers")
        payload, offset = _take(view, offset, f"part {i}'s body")
        try:
            headers = json.loads(head)
        except ValueError as exc:
            raise ValueError(f"part {i}'s headers are not JSON: {exc}") from None
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError(f"part {i}'s headers are not an object of strings")
        parts.append((headers, payload))
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} bytes after the last of {count} parts")
    return parts


def pack_answers(answers: list[Answer]) -> bytes:
    """[(status, body), ...] -> one body."""
    return b"".join(_ANSWER.pack(status, len(payload)) + payload for status, payload in answers)


def unpack_answers(data: bytes, count: int) -> list[Answer]:
    """The inverse of pack_answers; ValueError unless `data` holds exactly `count` answers."""
    view, offset, answers = memoryview(data), 0, []
    for i in range(count):
        if offset + _ANSWER.size > len(view):
            raise ValueError(f"truncated answers: {i} of {count}")
        status, size = _ANSWER.unpack_from(view, offset)
        offset += _ANSWER.size
        if offset + size > len(view):
            raise ValueError(f"truncated answers: answer {i} needs {size} bytes")
        answers.append((status, bytes(view[offset : offset + size])))
        offset += size
    if offset != len(view):
        raise ValueError(f"{len(view) - offset} bytes after the last of {count} answers")
    return answers


def _internal(message: str) -> Answer:
    return 500, body(500, message)


@dataclass
class _Pending:
    payload: bytes
    headers: dict[str, str]
    done: threading.Event  # set when answered, or when handed a batch to send (`batch`)
    answer: Answer | None = None
    batch: list[_Pending] | None = None

    def result(self) -> Answer:
        """The answer, once `done` says there is one (every request in a call gets one)."""
        assert self.answer is not None, "answered without an answer"
        return self.answer


class _Drawing:
    """submit_many's shared state: its parts, drawn by one thread at a time, within a byte budget."""

    def __init__(self, parts: Iterator[tuple[int, Part]], max_bytes: int):
        self.parts, self.max_bytes = parts, max_bytes
        self.answers: dict[int, Answer] = {}
        self.failure: BaseException | None = None
        self._draw = threading.Lock()  # one thread draws (and waits for room) at a time
        self._room = threading.Condition()  # guards `_in_flight`
        self._in_flight = 0  # bytes of the parts drawn and not yet answered

    def next(self) -> tuple[int, Part] | None:
        """The next part once its bytes fit in the budget; None when there are no more or one failed."""
        with self._draw:
            if self.failure is not None:
                return None
            try:
                drawn = next(self.parts, None)
            except BaseException as exc:
                self.fail(exc)
                return None
            if drawn is None:
                return None
            size = len(drawn[1][0])
            with self._room:
                self._room.wait_for(lambda: self._in_flight == 0 or self._in_flight + size <= self.max_bytes)
                self._in_flight += size
            return drawn

    def done(self, size: int) -> None:
        with self._room:
            self._in_flight -= size
            self._room.notify_all()

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc


class Batcher:
    """Up to `slots` model-server calls at once (one per worker). A request that finds a slot free
    is sent at once by its own thread; the others wait, and the thread whose call ends hands its
    slot to the oldest waiting one together with up to `max_batch` waiting requests (`max_bytes`
    in all), which it sends as one call and answers."""

    def __init__(self, send: Send, slots: int, max_batch: int, max_bytes: int, max_delay: float = 0.0):
        self.send, self.slots, self.max_batch = send, max(1, slots), max(1, max_batch)
        self.max_bytes, self.max_delay = max_bytes, max_delay
        self._queue: collections.deque[_Pending] = collections.deque()
        self._lock = threading.Condition()
        self._busy = 0  # calls in flight; while below `slots`, nothing waits in the queue
        self.sizes: collections.Counter[int] = collections.Counter()  # batch size -> calls made

    def submit(self, payload: bytes, headers: dict[str, str]) -> Answer:
        """Send one request (alone, or with others waiting at the same time); its own answer."""
        me = _Pending(payload, headers, threading.Event())
        with self._lock:
            if self._busy < self.slots:
                self._busy += 1
                if self.max_delay > 0:
                    self._fill(time.monotonic() + self.max_delay)
                batch = self._take(me)
            else:
                self._queue.append(me)
                self._lock.notify_all()  # a call filling its batch (max_delay) may take this one
                batch = None
        if batch is None:
            me.done.wait()
            if me.batch is None:
                return me.result()
            batch = me.batch
        try:
            self._call(batch)
        finally:
            with self._lock:  # the slot goes to the oldest waiting request, with what waits behind it
                if self._queue:
                    nxt = self._take()
                    nxt[0].batch = nxt
                    nxt[0].done.set()
                else:
                    self._busy -= 1
        return me.result()

    @property
    def window(self) -> int:
        """How many of submit_many's requests are in flight at once."""
        return WINDOW_FACTOR * self.slots * self.max_batch

    def submit_many(self, parts: Iterable[Part]) -> list[Answer]:
        """Each part through `submit` (so the parts of one client request share forward passes with
        each other and with other clients' requests), their answers in order. Parts are drawn from
        `parts` only as a thread of a small pool (`window`) is free and while the bodies in flight
        stay within `max_bytes` (one part alone may be larger), so a lazy iterable is decoded a few
        records at a time. When drawing raises, no more is drawn, the parts in flight finish, and the
        exception is raised here."""
        drawing = _Drawing(enumerate(parts), self.max_bytes)
        threads = [
            threading.Thread(target=self._submit_drawn, args=(drawing,), daemon=True) for _ in range(self.window)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if drawing.failure is not None:
            raise drawing.failure
        return [drawing.answers[i] for i in range(len(drawing.answers))]

    def _submit_drawn(self, drawing: _Drawing) -> None:
        while (drawn := drawing.next()) is not None:
            index, (payload, headers) = drawn
            try:
                drawing.answers[index] = self.submit(payload, headers)
            except BaseException as exc:  # submit answers every failure itself; this is a bug
                drawing.fail(exc)
            finally:
                drawing.done(len(payload))

    def _fill(self, deadline: float) -> None:
        """Wait (the lock released meanwhile) until a batch's worth waits or `deadline` passes."""
        while len(self._queue) < self.max_batch - 1 and (left := deadline - time.monotonic()) > 0:
            self._lock.wait(left)

    def _take(self, first: _Pending | None = None) -> list[_Pending]:
        """`first` (else the oldest waiting request) and the oldest waiting ones that fit in the same
        call; the lock held."""
        batch = [first or self._queue.popleft()]
        size = len(batch[0].payload)
        while self._queue and len(batch) < self.max_batch and size + len(self._queue[0].payload) <= self.max_bytes:
            batch.append(self._queue.popleft())
            size += len(batch[-1].payload)
        return batch

    def _call(self, batch: list[_Pending]) -> None:
        """One model-server call for the batch; every request in it gets an answer, whatever happens."""
        self.sizes[len(batch)] += 1
        try:
            answers = self._send(batch)
        except Exception:
            log.exception("a call for %d requests failed at the front", len(batch))
            answers = [_internal("internal error while forwarding the request")] * len(batch)
        for pending, answer in zip(batch, answers, strict=True):
            pending.answer = answer
            if pending is not batch[0]:
                pending.done.set()

    def _send(self, batch: list[_Pending]) -> list[Answer]:
        if len(batch) == 1:
            return [self.send(batch[0].payload, batch[0].headers)]
        body = pack_requests([(p.headers, p.payload) for p in batch])
        status, answer = self.send(body, {CONTENT_TYPE: FRAMED_CONTENT_TYPE, BATCH_HEADER: str(len(batch))})
        if status != 200:  # the model server failed the whole call (timeout, no worker): all share it
            return [(status, answer)] * len(batch)
        try:
            return unpack_answers(answer, len(batch))
        except ValueError as exc:
            log.error("the model worker's answer to a batch of %d is malformed: %s", len(batch), exc)
            return [_internal("internal error: the model worker's answer was malformed")] * len(batch)
