"""The parts of bench/pipeline.py that know nothing of the suite: CPU by process group from /proc,
and the open-loop load generator (HTTP/1.1 on asyncio streams, cheap per request)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (session id, utime + stime in seconds, cmdline) for every process we may read."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            table[int(entry.name)] = (int(stat[3]), (int(stat[11]) + int(stat[12])) / TICK, cmdline)
    return table


def cpu_by_group(sessions: dict[int, str], databases: tuple[str, ...]) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each pid, by group: each service's session (session id -> name), the Postgres backends of
    the run's databases, Postgres's background processes (shared with anything else on this
    server), RabbitMQ's Erlang VM (shared likewise)."""
    groups: dict[str, dict[int, float]] = {name: {} for name in sessions.values()}
    groups |= {"postgres": {}, "postgres (background)": {}, "rabbitmq": {}}
    for pid, (sid, cpu, cmdline) in proc_table().items():
        if sid in sessions:
            groups[sessions[sid]][pid] = cpu
        elif cmdline.startswith("postgres: "):
            if any(f" {db} " in cmdline for db in databases):
                groups["postgres"][pid] = cpu
            elif "(" not in cmdline and "autovacuum worker" not in cmdline:
                groups["postgres (background)"][pid] = cpu
        elif "beam.smp" in cmdline and "rabbit" in cmdline:
            groups["rabbitmq"][pid] = cpu
    return groups


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds each group used between two snapshots (a process born in between: all of it)."""
    return {g: sum(cpu - before.get(g, {}).get(pid, 0.0) for pid, cpu in pids.items()) for g, pids in after.items()}


class Pool:
    """HTTP/1.1 keep-alive connections on asyncio streams: a new one whenever all are busy."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].split(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

    async def put(self, path: str, body: bytes) -> int:
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        while True:
            now = time.monotonic()
            while self.idle and now - self.idle[-1][2] > 3:  # the server drops idle ones after 5 s
                self.idle.pop()[1].close()
            fresh = not self.idle
            if fresh:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self.opened += 1
            else:
                reader, writer, _ = self.idle.pop()
            writer.write(head.encode() + body)
            status_line = await reader.readline()
            if status_line or fresh:
                break
            writer.close()  # closed under us: once more on a fresh connection
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
class Load:
    latency_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    late_starts: int = 0
    connections: int = 0
    seconds: float = 0.0


async def open_loop(url: str, rate: float, seconds: float, timeout: float = 10) -> Load:
    """PUTs start at start + n / rate whatever the answers; latency counts from that instant."""
    load, pool, loop = Load(), Pool(url), asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    start = loop.time()

    async def one(number: int, scheduled: float) -> None:
        body = (
            f'{{"currency":"{("USD", "EUR", "GBP")[number % 3]}",'
            f'"amount":"{random.randint(1, 999)}.{random.randint(0, 99):02d}",'
            f'"idempotence_key":"{uuid.uuid4()}"}}'
        ).encode()
        try:
            status = str(await asyncio.wait_for(pool.put("/buy_order", body), timeout))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
            status = type(error).__name__
        load.latency_ms.append((loop.time() - scheduled) * 1000)
        load.statuses[status] = load.statuses.get(status, 0) + 1

    for number in range(int(rate * seconds)):
        scheduled = start + number / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            load.late_starts += 1
        task = asyncio.create_task(one(number, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 5)
    load.seconds = loop.time() - start
    pool.close()
    load.connections = pool.opened
    return load


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
