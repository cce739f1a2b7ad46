"""A closed-loop HTTP/1.1 load generator on asyncio: N keep-alive connections, each posting the
same body back to back for a fixed time; latencies of answered requests, errors counted."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    rps: float
    first_error: str = ""
    total_requests: int = 0  # warm-up included
    cpu_ms_per_request: float | None = None  # the server's CPU time (all its processes) per answered request
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # not in the JSON

    def to_json(self) -> dict:
        out = asdict(self)
        del out["latencies_ms"]
        return out


def merge(parts: list[LoadResult]) -> LoadResult:
    """Several runs at the same concurrency as one: pooled latencies, summed counts and time."""
    ms = [x for p in parts for x in p.latencies_ms]
    seconds = sum(p.seconds for p in parts)
    cpu = [p.cpu_ms_per_request * p.total_requests for p in parts if p.cpu_ms_per_request is not None]
    total = sum(p.total_requests for p in parts)
    return LoadResult(
        concurrency=parts[0].concurrency,
        seconds=round(seconds, 2),
        requests=len(ms),
        errors=sum(p.errors for p in parts),
        p50_ms=round(percentile(ms, 50), 1),
        p90_ms=round(percentile(ms, 90), 1),
        p99_ms=round(percentile(ms, 99), 1),
        rps=round(len(ms) / seconds, 2),
        first_error=next((p.first_error for p in parts if p.first_error), ""),
        total_requests=total,
        latencies_ms=ms,
        cpu_ms_per_request=round(sum(cpu) / total, 1) if len(cpu) == len(parts) and total else None,
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _connection(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    latencies: list,
    errors: list,
    record_after: float,
    done: list,
) -> None:
    reader = writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            start = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status, body = await _read_response(reader)
            end = time.perf_counter()
            done.append(status)
            if not record_after <= end <= deadline:
                continue  # warm-up, or after the measured window
            if status == 200:
                latencies.append(end - start)
            else:
                errors.append(f"HTTP {status}: {body[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


def run(
    url_host: str,
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    concurrency: int,
    seconds: float,
    warmup: float = 2.0,
) -> LoadResult:
    """Post `body` from `concurrency` connections for `warmup + seconds`; stats over the requests
    that completed in the last `seconds`."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {url_host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    done: list[int] = []

    async def main() -> None:
        now = time.perf_counter()
        record_after, deadline = now + warmup, now + warmup + seconds
        await asyncio.gather(
            *(
                _connection(url_host, port, request, deadline, latencies, errors, record_after, done)
                for _ in range(concurrency)
            )
        )

    asyncio.run(main())
    # What completed inside the window, over the window: a request that started during the warm-up
    # but ends inside counts, as one in flight at the deadline does not (a closed loop at
    # concurrency C keeps C requests in flight, so counting by start time would undercount by about
    # latency / window, 8 % at 16 connections and 0.9 s latency).
    measured = seconds
    ms = [x * 1e3 for x in latencies]
    return LoadResult(
        concurrency=concurrency,
        seconds=round(measured, 2),
        requests=len(ms),
        errors=len(errors),
        p50_ms=round(percentile(ms, 50), 1),
        p90_ms=round(percentile(ms, 90), 1),
        p99_ms=round(percentile(ms, 99), 1),
        rps=round(len(ms) / measured, 2),
        first_error=errors[0] if errors else "",
        total_requests=sum(1 for d in done if d == 200),
        latencies_ms=ms,
    )


def fetch(url: str, body: bytes, content_type: str, timeout: float = 60) -> tuple[int | None, bytes]:
    """One POST; its status and body, or (None, b"") when nothing answered."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return None, b""


def post(url: str, body: bytes, content_type: str, timeout: float = 60) -> int | None:
    """One POST; its status, or None when nothing answered."""
    return fetch(url, body, content_type, timeout)[0]
