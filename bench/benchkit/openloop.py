"""The open-loop generator: `PUT /buy_order` started on a fixed schedule whatever the answers (no
coordinated omission), each with a new idempotence key, latency counted from the scheduled start."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import time
import uuid
from dataclasses import dataclass, field

LATE_START_MS = 5.0  # a request started later than this after its scheduled instant counts as a late start


class Http:
    """A minimal HTTP/1.1 keep-alive connection pool on asyncio streams (cheap per request)."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].split(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
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
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await reader.readexactly(length)
        self.idle.append((reader, writer, time.monotonic()))
        return int(status_line.split()[1])

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()


@dataclass
class OpenLoop:
    put_latency_ms: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)  # no answer: error's name
    elapsed: float = 0.0  # seconds from the first scheduled start to the last answer
    late_starts: int = 0
    connections: int = 0


def run_open_loop(create_url: str, rate: float, seconds: float) -> OpenLoop:
    """The generator is Python: on a busy 2-core machine it must not queue behind the services it
    measures, so it runs at a higher scheduling priority (nice -10, when allowed) while it runs."""
    raised = False
    with contextlib.suppress(PermissionError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        raised = True
    try:
        return asyncio.run(open_loop(create_url, rate, seconds))
    finally:
        if raised:
            os.setpriority(os.PRIO_PROCESS, 0, 0)


async def open_loop(create_url: str, rate: float, seconds: float, request_timeout: float = 10) -> OpenLoop:
    """A request without an answer within `request_timeout` (or whose connection fails) counts in
    `failures`, its latency until then included."""
    result = OpenLoop()
    create = Http(create_url)
    currencies = ["USD", "EUR", "GBP"]
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(number: int, scheduled: float) -> None:
        amount = f"{random.randint(1, 999)}.{random.randint(0, 99):02d}"
        body = f'{{"currency":"{currencies[number % 3]}","amount":"{amount}","idempotence_key":"{uuid.uuid4()}"}}'
        try:
            status = await asyncio.wait_for(create.request("PUT", "/buy_order", body.encode()), request_timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
            result.failures[type(error).__name__] += 1
        else:
            result.statuses[status] += 1
        result.put_latency_ms.append((loop.time() - scheduled) * 1000)

    for number in range(int(rate * seconds)):
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
        await asyncio.wait(tasks, timeout=request_timeout + 30)
    result.elapsed = loop.time() - start
    create.close()
    result.connections = create.opened
    return result
