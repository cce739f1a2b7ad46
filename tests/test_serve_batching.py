"""byoc.serve.batching: the framing of a batch of requests and its answers, and the batcher
that groups requests waiting for a busy worker."""

from __future__ import annotations

import threading
import time

import pytest

from byoc.serve import batching


def test_requests_and_answers_round_trip():
    parts = [({"Content-Type": "image/jpeg"}, b"\xff\xd8" * 100), ({}, b""), ({"Accept": "*/*"}, bytes(range(256)))]
    assert batching.unpack_requests(batching.pack_requests(parts), 3) == parts
    answers = [(200, b'{"predictions": []}'), (415, b""), (400, b"x" * 70000)]
    assert batching.unpack_answers(batching.pack_answers(answers), 3) == answers


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1],  # truncated body
        lambda b: b + b"x",  # trailing bytes
        lambda b: b[:3],  # truncated length
        lambda b: b"\x00\x00\x00\x01[" + b[5:],  # headers not JSON
    ],
)
def test_malformed_requests_raise_value_error(mangle):
    packed = batching.pack_requests([({"Content-Type": "image/png"}, b"abc"), ({}, b"de")])
    with pytest.raises(ValueError):
        batching.unpack_requests(mangle(packed), 2)


def test_wrong_counts_raise_value_error():
    packed = batching.pack_requests([({}, b"a")])
    for count in (0, 2):
        with pytest.raises(ValueError):
            batching.unpack_requests(packed, count)
    with pytest.raises(ValueError):
        batching.unpack_answers(batching.pack_answers([(200, b"a")]), 2)
    with pytest.raises(ValueError):
        batching.unpack_requests(b"\x00\x00\x00\x02[]\x00\x00\x00\x00", 1)  # headers not an object


class FakeWorker:
    """A model server with one worker: answers a framed batch part by part, records what it got.
    Each call waits for `release` (set from the start unless `hold`), so a test can keep the worker
    busy while requests queue; `seconds` models the time a call takes."""

    def __init__(self, status: int = 200, hold: bool = False, seconds: float = 0.0):
        self.status, self.seconds, self.calls = status, seconds, []
        self.busy, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, body: bytes, headers: dict) -> tuple[int, bytes]:
        self.busy.set()
        assert self.release.wait(10), "the test never released the worker"
        time.sleep(self.seconds)
        count = int(headers.get(batching.BATCH_HEADER, 0))
        self.calls.append(count or 1)
        if self.status != 200:
            return self.status, b'{"error": "busy", "status": %d}' % self.status
        if not count:
            return 200, b"alone:" + body
        parts = batching.unpack_requests(body, count)
        return 200, batching.pack_answers([(200 if b else 400, b"part:" + b) for _, b in parts])


def wait_until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def _start(batcher, body: bytes, out: dict) -> threading.Thread:
    def client():
        out[body] = batcher.submit(body, {"Content-Type": "image/png"})

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    return thread


def _submit_while_busy(batcher, worker: FakeWorker, bodies: list[bytes]) -> dict:
    """The first body occupies the worker (held); the others queue behind it in this order; then the
    worker is let go. Answers by body."""
    out: dict = {}
    threads = [_start(batcher, bodies[0], out)]
    assert worker.busy.wait(10), "the first request never reached the worker"
    for i, body in enumerate(bodies[1:], start=1):
        threads.append(_start(batcher, body, out))
        wait_until(lambda i=i: len(batcher._queue) == i, f"{i} requests wait")
    worker.release.set()
    for t in threads:
        t.join(10)
    return out


def _submit_together(batcher, bodies: list[bytes]) -> dict:
    out: dict = {}
    for t in [_start(batcher, body, out) for body in bodies]:
        t.join(10)
    return out


def test_a_lone_request_goes_at_once_unframed_from_its_own_thread():
    senders = []

    def send(body, headers):
        senders.append(threading.current_thread())
        return 200, b"alone:" + body

    batcher = batching.Batcher(send, slots=1, max_batch=8, max_bytes=1000)
    start = time.monotonic()
    assert batcher.submit(b"one", {}) == (200, b"alone:one")
    assert time.monotonic() - start < 0.1 and senders == [threading.current_thread()]
    assert batcher.submit(b"two", {}) == (200, b"alone:two") and batcher.sizes == {1: 2}


def test_waiting_requests_go_together_up_to_max_batch_and_max_bytes():
    worker = FakeWorker(hold=True)
    batcher = batching.Batcher(worker, slots=1, max_batch=3, max_bytes=1000)
    bodies = [b"first", b"b1", b"b2", b"b3", b"b4", b""]
    out = _submit_while_busy(batcher, worker, bodies)
    assert out[b"first"] == (200, b"alone:first")
    assert all(out[b] == (200, b"part:" + b) for b in bodies[1:5]) and out[b""] == (400, b"part:")
    assert worker.calls == [1, 3, 2]  # five waiting: the oldest three, then the other two

    worker = FakeWorker(hold=True)
    batcher = batching.Batcher(worker, slots=1, max_batch=8, max_bytes=10)
    out = _submit_while_busy(batcher, worker, [b"first", b"x" * 6, b"y" * 6, b"z" * 3])
    assert worker.calls == [1, 1, 2]  # 6 + 6 bytes do not fit in 10; 6 + 3 do
    assert all(status == 200 for status, _ in out.values()) and out[b"z" * 3] == (200, b"part:" + b"z" * 3)


def test_each_slot_sends_its_own_batch():
    both_in_flight = threading.Barrier(2, timeout=10)  # broken (and a 500) unless both calls run at once

    def send(body, headers):
        both_in_flight.wait()
        return 200, b"alone:" + body

    batcher = batching.Batcher(send, slots=2, max_batch=8, max_bytes=1000)
    out = _submit_together(batcher, [b"a", b"b"])
    assert out == {b"a": (200, b"alone:a"), b"b": (200, b"alone:b")} and batcher.sizes == {1: 2}


def test_a_failed_call_answers_every_request_in_it():
    worker = FakeWorker(status=504, hold=True)
    batcher = batching.Batcher(worker, slots=1, max_batch=8, max_bytes=1000)
    out = _submit_while_busy(batcher, worker, [b"first", b"x", b"y"])
    assert out == {body: (504, b'{"error": "busy", "status": 504}') for body in (b"first", b"x", b"y")}
    assert worker.calls == [1, 2]

    worker = FakeWorker(hold=True)

    def broken(body, headers):
        if batching.BATCH_HEADER in headers:
            return 200, b"\x00"  # not the framing
        worker(body, headers)
        raise RuntimeError("bug")

    batcher = batching.Batcher(broken, slots=1, max_batch=8, max_bytes=1000)
    out = _submit_while_busy(batcher, worker, [b"first", b"x", b"y"])
    assert {status for status, _ in out.values()} == {500} and len(out) == 3
    assert all(b"internal error" in body and b"bug" not in body for _, body in out.values())
    assert batcher.sizes == {1: 1, 2: 1}


def test_max_delay_waits_to_fill_a_batch():
    worker = FakeWorker()
    # A delay far longer than the test: the call goes when the batch is full, not when the delay ends.
    batcher = batching.Batcher(worker, slots=1, max_batch=2, max_bytes=1000, max_delay=60)
    out: dict = {}
    first = _start(batcher, b"a", out)
    wait_until(lambda: batcher._busy == 1, "the first request holds the slot")
    second = _start(batcher, b"b", out)
    for t in (first, second):
        t.join(10)
    assert worker.calls == [2] and out == {b"a": (200, b"part:a"), b"b": (200, b"part:b")}


def test_every_waiting_request_is_answered_under_load():
    worker = FakeWorker(seconds=0.01)  # each call takes a little while, so requests pile up
    batcher = batching.Batcher(worker, slots=2, max_batch=4, max_bytes=1000)
    bodies = [f"r{i}".encode() for i in range(60)]
    out = _submit_together(batcher, bodies)
    assert all(out[b] in ((200, b"alone:" + b), (200, b"part:" + b)) for b in bodies)
    assert sum(n * k for n, k in batcher.sizes.items()) == 60 and max(batcher.sizes) <= 4
    assert batcher._busy == 0 and not batcher._queue
