"""The open-loop generator: requests start on a fixed schedule whatever the answers (no coordinated
omission), latency counted from the scheduled start; optionally a sample of the created orders is
followed with `GET /buy_orders/{id}` until it is visible (the projection lag)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from benchkit import log
from benchkit.stats import pct

LATE_START_MS = 5.0  # a request started later than this after its scheduled instant counts as a late start


class Http:
    """A minimal HTTP/1.1 keep-alive connection pool on asyncio streams (cheap per request)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

    @classmethod
    def to(cls, url: str) -> Http:
        """A pool to `http://host:port`."""
        host, port = url.split("//")[1].split(":")
        return cls(host, int(port))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        while True:
            # The server closes keep-alive connections idle for 5 s: drop those older than 3 s,
            # and retry once on a fresh connection if one was closed under us anyway.
            now = time.monotonic()
            while self.idle and now - self.idle[-1][2] > 3:
                self.idle.pop()[1].close()
            fresh = not self.idle
            if fresh:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self.opened += 1
            else:
                reader, writer, _ = self.idle.pop()
            writer.write(head.encode() + b"\r\n" + body)
            status_line = await reader.readline()
            if status_line or fresh:
                break
            writer.close()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await reader.readexactly(length) if length else b""
        self.idle.append((reader, writer, time.monotonic()))
        return status, payload

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()


@dataclass
class OpenLoop:
    rate: float
    seconds: float
    put_latency_ms: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)  # no answer: error's name
    elapsed: float = 0.0  # seconds from the first scheduled start to the last answer
    late_starts: int = 0
    connections: int = 0
    lag: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, lag ms)
    lag_unseen: int = 0
    polls: int = 0
    created_ids: list[str] = field(default_factory=list)


def run_open_loop(*args: Any, **kwargs: Any) -> OpenLoop:
    """The generator is Python: on a busy 2-core machine it must not queue behind the services it
    measures, so it runs at a higher scheduling priority (nice -10, when allowed) while it runs."""
    raised = False
    with contextlib.suppress(PermissionError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        raised = True
    try:
        return asyncio.run(open_loop(*args, **kwargs))
    finally:
        if raised:
            os.setpriority(os.PRIO_PROCESS, 0, 0)


async def open_loop(
    create_url: str, rate: float, seconds: float, fetch_url: str | None = None, track_per_second: float = 10,
    poll_ms: float = 5, lag_timeout: float = 10, request_timeout: float = 10,
) -> OpenLoop:  # fmt: skip
    """Requests start on a fixed schedule whatever the answers (no coordinated omission):
    latency counts from the scheduled start. A request without an answer within `request_timeout`
    (or whose connection fails) counts in `failures`, its latency until then included. With `fetch_url`,
    a sample of the created orders is polled with `GET /buy_orders/{id}` every `poll_ms` until it answers 200."""
    result = OpenLoop(rate, seconds)
    create = Http.to(create_url)
    fetch = Http.to(fetch_url) if fetch_url else None
    currencies = ["USD", "EUR", "GBP"]
    track_every = max(1, round(rate / track_per_second))
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def follow(order_id: str, created_at: float) -> None:
        assert fetch is not None
        deadline = created_at + lag_timeout
        while loop.time() < deadline:
            status, _ = await fetch.request("GET", f"/buy_orders/{order_id}")
            result.polls += 1
            if status == 200:
                now = loop.time()
                result.lag.append((created_at - start, (now - created_at) * 1000))
                return
            # Every poll_ms for the first 200 ms, then every 25 ms: a lagging read model must not
            # be buried under the benchmark's own polls.
            await asyncio.sleep(poll_ms / 1000 if loop.time() - created_at < 0.2 else 0.025)
        result.lag_unseen += 1

    async def one(number: int, scheduled: float) -> None:
        body = (
            f'{{"currency":"{currencies[number % 3]}","amount":"{random.randint(1, 999)}.{random.randint(0, 99):02d}",'
            f'"idempotence_key":"{uuid.uuid4()}"}}'
        ).encode()
        try:
            status, payload = await asyncio.wait_for(create.request("PUT", "/buy_order", body), request_timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
            result.put_latency_ms.append((loop.time() - scheduled) * 1000)
            result.failures[type(error).__name__] += 1
            return
        done = loop.time()
        result.put_latency_ms.append((done - scheduled) * 1000)
        result.statuses[status] += 1
        if status == 201 and fetch is not None and number % track_every == 0:
            order_id = json.loads(payload)["id"]
            result.created_ids.append(order_id)
            await follow(order_id, done)

    total = int(rate * seconds)
    for number in range(total):
        scheduled = start + number / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -LATE_START_MS / 1000:
            result.late_starts += 1
        task = asyncio.create_task(one(number, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=lag_timeout + 30)
    result.elapsed = loop.time() - start
    create.close()
    result.connections = create.opened
    if fetch:
        fetch.close()
    return result


def log_open_loop(label: str, run: OpenLoop) -> None:
    lat = run.put_latency_ms
    log(
        f"{label}: {len(lat)} PUTs, statuses {dict(run.statuses)}, failures {dict(run.failures)}, "
        f"p50 {pct(lat, 50):.1f} p99 {pct(lat, 99):.1f} ms, "
        f"late starts {run.late_starts}, lag samples {len(run.lag)} (unseen {run.lag_unseen})"
        + (
            f", lag p50 {pct([v for _, v in run.lag], 50):.1f} p99 {pct([v for _, v in run.lag], 99):.1f} ms"
            if run.lag
            else ""
        )
    )
