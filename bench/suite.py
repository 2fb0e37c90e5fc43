"""The benchmark suite: the whole system as it runs in production, against ceilings measured in
the same run on the same machine, written to docs/benchmarks.md with plots in docs/img/.

Everything runs on 127.0.0.1: throwaway Postgres databases and a RabbitMQ vhost, the services
under gunicorn with uvicorn workers (docker/gunicorn.conf.py, LOG_LEVEL=WARNING, each process in
its own empty temporary working directory so that the repository's .env is not read), Coinbase
played by codebase/tests/support/fake_coinbase.py in this process. Load: wrk (closed loop, one
thread) for throughput, an open-loop asyncio generator of this file for latency and lag.

Phases: ceilings (wrk and trivial FastAPI) -> pgbench ceilings (a) and (b) -> PUT /buy_order
throughput at 1/8/32/64 clients and 2 and 4 workers -> pgbench again -> profile (py-spy) -> PUT
latency at half the max rate -> read_model_sync drain -> projection lag at half the max rate ->
GET /buy_orders vs the trivial endpoint -> paging depth (bench/paging.py) -> report.

Usage: bench/run_all.sh [--quick] (see --help)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO / "codebase" / "tests" / "support"))
from fake_coinbase import FakeCoinbase

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECTION_START = "<!-- suite:start (written by bench/suite.py) -->"
SECTION_END = "<!-- suite:end -->"
PAGING_START = "<!-- paging-depth:start"
GUNICORN_CONF = REPO / "docker" / "gunicorn.conf.py"
RATE_TTL_SECONDS = 2.0
DEFAULT_POOL_SIZE = 20  # DB_POOL_SIZE's default in btc_orders.settings
POOL_VARIANTS = (10, 40)
PGBENCH = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """Percentile q (0..100), interpolating between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


# ---------------------------------------------------------------------------
# Coinbase, with a timestamp for every call


class TimedCalls(collections.Counter):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str]] = []

    def __setitem__(self, key: str, value: int) -> None:
        if value > self.get(key, 0):
            self.stamps.append((time.monotonic(), key))
        super().__setitem__(key, value)


# ---------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    workdir: tempfile.TemporaryDirectory[str]
    url: str | None = None

    @property
    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return (Path(self.workdir.name) / "out.log").read_text(errors="replace")[-4000:]
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.workdir.cleanup()

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False).stdout
        return [int(pid) for pid in out.split()]


class Processes:
    def __init__(self) -> None:
        self.running: list[Proc] = []

    def start(self, name: str, command: list[str], env: dict[str, str], url: str | None = None) -> Proc:
        workdir = tempfile.TemporaryDirectory(prefix=f"bench_{name}_")
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        with open(Path(workdir.name) / "out.log", "wb") as out:
            process = subprocess.Popen(
                command, cwd=workdir.name, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(name, process, workdir, url)
        self.running.append(proc)
        if url:
            wait_http(proc, url + "/healthz" if name != "trivial" else url + "/ping")
        return proc

    def gunicorn(self, service: str, workers: int, env: dict[str, str], app: str | None = None) -> Proc:
        port = free_port()
        port_var = {"btc_price": "BTC_PRICE_PORT", "create_buy_order": "CREATE_BUY_ORDER_PORT"}.get(
            service, "FETCH_BUY_ORDERS_PORT"
        )
        command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)] + ([app] if app else [])
        extra = {"PYTHONPATH": str(BENCH)} if app else {}
        name = "trivial" if app else service
        return self.start(
            name,
            command,
            {
                "BTC_ORDERS_SERVICE": service,
                port_var: str(port),
                "WEB_CONCURRENCY": str(workers),
                **extra,
                **env,
            },
            url=f"http://127.0.0.1:{port}",
        )

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            with contextlib.suppress(Exception):
                proc.stop()
        self.running.clear()


def wait_http(proc: Proc, url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.process.poll() is not None:
            raise SystemExit(f"{proc.name} exited with {proc.process.returncode}:\n{proc.log_text}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{proc.name} did not answer {url} within {timeout}s:\n{proc.log_text}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------
# wrk and pgbench


@dataclass
class WrkResult:
    label: str
    clients: int
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    wrk_cpu: float  # cores used by wrk itself

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok_rate(self) -> float:
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(label: str, url: str, clients: int, seconds: float, script: str, *args: str) -> WrkResult:
    command = [
        "wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(BENCH / script), url,
    ]  # fmt: skip
    if args:
        command += ["--", *args]
    before = children_cpu()
    out = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, "BENCH_DIR": str(BENCH)})
    cpu = children_cpu() - before
    match = re.search(r"WRK_RESULT (.*)", out.stdout)
    if not match:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    fields = dict(item.split("=") for item in match.group(1).split())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    seconds_run = int(fields["duration_us"]) / 1e6
    result = WrkResult(
        label=label,
        clients=clients,
        requests=int(fields["requests"]),
        seconds=seconds_run,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(fields[k]) for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")),
        p50_ms=int(fields["p50_us"]) / 1000,
        p90_ms=int(fields["p90_us"]) / 1000,
        p99_ms=int(fields["p99_us"]) / 1000,
        wrk_cpu=cpu / seconds_run if seconds_run else 0,
    )
    log(
        f"wrk {label} c={clients}: {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} p99 {result.p99_ms:.1f} ms, "
        f"non-2xx {result.non_2xx}, socket errors {result.socket_errors}, wrk {result.wrk_cpu:.2f} cores"
    )
    return result


@dataclass
class PgbenchResult:
    label: str
    clients: int
    tps: float
    latency_ms: float
    failed: int


def pgbench(label: str, db_url: str, script: str, clients: int, seconds: float) -> PgbenchResult:
    command = [
        PGBENCH, "-n", "-f", str(BENCH / "pgbench" / script), "-c", str(clients), "-j", str(min(clients, 2)),
        "-T", str(max(1, round(seconds))), db_url,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    tps = re.search(r"tps = ([\d.]+)", out.stdout)
    if not tps:
        raise SystemExit(f"pgbench failed: {out.stdout}\n{out.stderr}")
    latency = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    result = PgbenchResult(
        label, clients, float(tps.group(1)), float(latency.group(1)) if latency else 0, int(failed.group(1)) if failed else 0
    )
    log(f"pgbench {label} c={clients}: {result.tps:,.0f} tx/s")
    return result


# ---------------------------------------------------------------------------
# Open-loop load (latency and lag)


class Http:
    """A minimal HTTP/1.1 keep-alive connection pool on asyncio streams (cheap per request)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

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
    poll_ms: float = 5, lag_timeout: float = 10,
) -> OpenLoop:  # fmt: skip
    """Requests start on a fixed schedule whatever the answers (no coordinated omission):
    latency counts from the scheduled start. With `fetch_url`, a sample of the created orders
    is polled with `GET /buy_orders/{id}` every `poll_ms` until it answers 200."""
    result = OpenLoop(rate, seconds)
    host, port = create_url.split("//")[1].split(":")
    create = Http(host, int(port))
    fetch = Http(*(lambda h, p: (h, int(p)))(*fetch_url.split("//")[1].split(":"))) if fetch_url else None
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
        status, payload = await create.request("PUT", "/buy_order", body)
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
        elif delay < -0.005:
            result.late_starts += 1
        task = asyncio.create_task(one(number, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=lag_timeout + 30)
    create.close()
    result.connections = create.opened
    if fetch:
        fetch.close()
    return result


# ---------------------------------------------------------------------------
# Databases and RabbitMQ


def admin() -> Any:
    connection = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    connection.autocommit = True
    return connection


def db_url(name: str, driver: bool = False) -> str:
    return f"postgresql{'+psycopg2' if driver else ''}://postgres@127.0.0.1:5432/{name}"


def scalar(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]
    finally:
        connection.close()


def execute(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def publish_events(amqp_url: str, count: int, first_sequence: int) -> float:
    """Publish `count` valid buy_order.created events straight to the exchange, as the relay would."""
    import pika
    from btc_orders.adapters import rabbitmq
    from btc_orders.domain.orders import BuyOrder, Currency
    from btc_orders.events import created_event

    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    rabbitmq.declare_topology(channel)
    now = dt.datetime.now(dt.UTC)
    currencies = list(Currency)
    batch = 1000
    for low in range(0, count, batch):
        for number in range(low, min(count, low + batch)):
            order = BuyOrder(
                id=uuid.uuid4(),
                sequence=first_sequence + number,
                created_at=now,
                currency=currencies[number % 3],
                amount=Decimal("123.45"),
                exchange_rate=Decimal("97012.34"),
                bitcoin_amount=Decimal("0.00127252"),
                idempotence_key=uuid.uuid4(),
            )
            event_id = uuid.uuid4()
            channel.basic_publish(
                rabbitmq.EXCHANGE,
                rabbitmq.ROUTING_KEY,
                created_event(order, event_id, "bench").encode(),
                pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=str(event_id),
                    type=rabbitmq.ROUTING_KEY,
                ),
            )
    # No publisher confirms (BlockingChannel would wait for each): wait for the queue to hold them all.
    deadline = time.monotonic() + 120
    while True:
        depth = channel.queue_declare(rabbitmq.QUEUE, passive=True).method.message_count
        if depth >= count:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"published {count} events but the queue holds {depth}")
        connection.sleep(0.2)
    connection.close()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------
# The machine


def machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    cpu = "unknown"
    match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    if match:
        cpu = match.group(1).strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    pg = scalar(PG_ADMIN, "SHOW server_version").split()[0]
    pgbench_version = subprocess.run([PGBENCH, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    rabbit = subprocess.run(
        ["rabbitmqctl", "-q", "eval", "rabbit_misc:version()."], capture_output=True, text=True
    ).stdout.strip().strip('"')
    return {
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip(),
        "cpu": cpu,
        "memory": f"{total_kib / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "postgres": pg,
        "pgbench": pgbench_version,
        "rabbitmq": rabbit or "?",
        "wrk": wrk_version.strip(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---------------------------------------------------------------------------
# The profile


def profile_summary(raw_path: Path, top: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """From py-spy's collapsed stacks: the top frames by own samples and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [simplify_frame(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if frame]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return [], [], 0
    return (
        [(name, 100 * n / total) for name, n in own.most_common(top)],
        [(name, 100 * n / total) for name, n in inclusive.most_common(top * 3)],
        total,
    )


def simplify_frame(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (pkg/file.py)"
    if frame.startswith("process ") or frame.startswith("thread "):
        return ""
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame.strip()
    function, path = match.groups()
    if path.startswith("process ") or function.startswith("process "):
        return ""
    path = re.sub(r".*/site-packages/", "", path)
    path = re.sub(r".*/src/btc_orders/", "btc_orders/", path)
    path = re.sub(r".*/lib/python3\.\d+/", "stdlib/", path)
    return f"{function} ({path})"


# ---------------------------------------------------------------------------
# Plots


def save(figure: Any, img: Path, name: str) -> str:
    """Write the figure as img/name, close it, return the name."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(img / name)
    plt.close(figure)
    return name


def plots(results: dict[str, Any], img: Path, quick: bool) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    names = {}
    suffix = "_quick" if quick else ""

    # Throughput against concurrency
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    clients = results["clients"]
    for workers, runs in results["put"].items():
        axis.plot(clients, [runs[c].ok_rate for c in clients], marker="o", label=f"PUT /buy_order, {workers} workers")
    for label, key, style in (("pgbench (a) own transaction", "a", "--"), ("pgbench (b) naive one cap row", "b", ":")):
        axis.plot(
            clients, [results["pgbench_mean"][key][c] for c in clients], linestyle=style, marker="s", label=label
        )
    axis.set_xscale("log", base=2)
    axis.set_xticks(clients, [str(c) for c in clients])
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("orders/s (transactions/s for pgbench)")
    axis.set_title("Create throughput against concurrency, with the database ceilings of the same run")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    names["throughput"] = save(figure, img, f"bench_throughput{suffix}.png")

    # Latency percentiles
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    qs = [50, 75, 90, 95, 99, 99.9]
    for label, values in results["latency_series"].items():
        axis.plot([str(q) for q in qs], [pct(values, q) for q in qs], marker="o", label=label)
    axis.axhline(50, color="red", linestyle="--", alpha=0.5, label="goal p99 50 ms (PUT)")
    axis.axhline(100, color="purple", linestyle=":", alpha=0.5, label="goal p99 100 ms (lag)")
    axis.set_yscale("log")
    axis.set_xlabel("percentile")
    axis.set_ylabel("ms (log scale)")
    axis.set_title(f"Latency at half the max create rate ({results['half_rate']:.0f} orders/s, open loop)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    names["latency"] = save(figure, img, f"bench_latency{suffix}.png")

    # Lag over time
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    db_lag = results["db_lag"]
    if db_lag:
        axis.scatter([t for t, _ in db_lag], [v for _, v in db_lag], s=2, alpha=0.3, label="every order (read-model applied_at - write-model created_at)")
    http_lag = results["lag_samples"]
    axis.scatter([t for t, _ in http_lag], [v for _, v in http_lag], s=10, color="tab:red", label="sampled: 201 to 200 on GET /buy_orders/{id}")
    axis.axhline(100, color="purple", linestyle=":", alpha=0.6, label="goal p99 100 ms")
    axis.set_xlabel("seconds into the run")
    axis.set_ylabel("projection lag (ms)")
    axis.set_title(f"Projection lag over time at {results['half_rate']:.0f} orders/s")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    names["lag"] = save(figure, img, f"bench_lag{suffix}.png")

    # Drain
    figure, axis = plt.subplots(figsize=(9, 4.5), dpi=110)
    drain = results["drain_series"]
    axis.plot([t for t, _ in drain], [n for _, n in drain])
    axis.set_xlabel("seconds since read_model_sync started")
    axis.set_ylabel("events in the read model")
    axis.set_title(f"read_model_sync draining a queue of {results['drain_events']:,} events")
    axis.grid(True, alpha=0.3)
    names["drain"] = save(figure, img, f"bench_drain{suffix}.png")
    return names


# ---------------------------------------------------------------------------
# The run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (a few minutes in all)")
    parser.add_argument("--seconds", type=float, help="seconds per throughput point (full 15, quick 4)")
    parser.add_argument("--workers", default="2,4", help="create_buy_order WEB_CONCURRENCY values (default 2,4)")
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--drain-events", type=int, help="events in the drain queue (full 100000, quick 20000)")
    parser.add_argument("--relay-backlog", type=int, help="outbox rows left unsent for the relay drain (full 30000, quick 10000)")
    parser.add_argument("--no-paging", action="store_true", help="skip bench/paging.py")
    parser.add_argument("--no-write", action="store_true", help="print the report, write no files")
    parser.add_argument("--limit", type=float, help="abort after this many seconds (full 2400, quick 720)")
    args = parser.parse_args()
    args.seconds = args.seconds or (4 if args.quick else 10)
    args.drain_events = args.drain_events or (20_000 if args.quick else 100_000)
    args.relay_backlog = args.relay_backlog or (10_000 if args.quick else 30_000)
    args.limit = args.limit or (720 if args.quick else 2400)
    args.workers = [int(w) for w in args.workers.split(",")]
    args.clients = [int(c) for c in args.clients.split(",")]
    return args


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    write_db, read_db, vhost = f"bench_w_{tag}", f"bench_r_{tag}", f"bench_{tag}"
    amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    procs = Processes()

    def interrupted(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(SystemExit("time limit reached")))
    signal.alarm(int(args.limit))

    coinbase = FakeCoinbase().start()
    coinbase.calls = TimedCalls()
    results: dict[str, Any] = {"clients": args.clients, "put": {}, "load_start": os.getloadavg()}
    info = machine()
    log(f"machine: {info}")
    conn = admin()
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{write_db}"')
        cursor.execute(f'CREATE DATABASE "{read_db}"')
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        from btc_orders.services.migration.__main__ import migrate

        migrate("write_model", db_url(write_db, True))
        migrate("read_model", db_url(read_db, True))
        # The naive design's one cap row, next to the real tables (used by pgbench/naive.sql only).
        execute(
            db_url(write_db),
            "CREATE TABLE bench_naive_cap (id int PRIMARY KEY, used_satoshis bigint NOT NULL, cap_satoshis bigint NOT NULL);"
            "INSERT INTO bench_naive_cap VALUES (1, 0, 2100000000000000)",
        )
        common = {"RATE_TTL_SECONDS": str(RATE_TTL_SECONDS)}
        btc_price = procs.gunicorn("btc_price", 1, {**common, "COINBASE_API_URL": coinbase.url})
        create_env = {
            **common,
            "WRITE_MODEL_DB_URL": db_url(write_db, True),
            "BTC_PRICE_URL": btc_price.url or "",
            "BTC_CAP": "21000000",
        }

        # 1. Ceilings of the HTTP stack and of the load generator.
        trivial = procs.gunicorn("fetch_buy_orders", 2, {}, app="trivial_app:app")
        results["wrk_ceiling_put"] = wrk("trivial PUT", trivial.url or "", 32, args.seconds, "put.lua", "1")
        results["trivial_get"] = {}
        for c in (8, 32):
            results["trivial_get"][c] = wrk("trivial GET /ping", f"{trivial.url}/ping", c, args.seconds, "get.lua")
        procs.stop(trivial)

        # 2. pgbench ceilings, before the HTTP runs.
        def pgbench_round(round_name: str) -> dict[str, dict[int, PgbenchResult]]:
            out: dict[str, dict[int, PgbenchResult]] = {"a": {}, "b": {}, "c": {}}
            for c in args.clients:
                out["a"][c] = pgbench(f"(a) {round_name}", db_url(write_db), "project.sql", c, args.seconds)
                out["b"][c] = pgbench(f"(b) {round_name}", db_url(write_db), "naive.sql", c, args.seconds)
                if c == 32:  # for the record, not a ceiling: the write before the one-statement tuning
                    out["c"][c] = pgbench(f"(c) {round_name}", db_url(write_db), "five_statements.sql", c, args.seconds)
            return out

        # The cap slots hold the BTC_CAP the service sets at start (21,000,000 BTC) - enough for pgbench.
        create = procs.gunicorn("create_buy_order", args.workers[0], create_env)
        procs.stop(create)
        results["pgbench_before"] = pgbench_round("before")
        # pgbench left ~100,000 new rows: vacuum now, so that autovacuum does not run during the
        # first PUT runs and slow them alone.
        execute(db_url(write_db), "VACUUM ANALYZE")

        # 3. PUT throughput.
        orders_before = scalar(db_url(write_db), "SELECT count(*) FROM buy_order WHERE request_id IS DISTINCT FROM 'pgbench'")
        put_runs: list[WrkResult] = []
        coinbase_window_start = time.monotonic()
        for workers in args.workers:
            create = procs.gunicorn("create_buy_order", workers, create_env)
            put_runs.append(wrk("warm-up", create.url or "", 8, 2, "put.lua", str(random.getrandbits(30))))
            runs = {}
            for c in args.clients:
                runs[c] = wrk(f"PUT {workers}w", create.url or "", c, args.seconds, "put.lua", str(random.getrandbits(30)))
                put_runs.append(runs[c])
            results["put"][workers] = runs
            procs.stop(create)
        # Configuration-only variants of the pool: each worker's request threads are capped at
        # DB_POOL_SIZE (no overflow), so the pool size is also the worker's concurrency.
        results["pool_variant"] = {}
        for pool in POOL_VARIANTS:
            create = procs.gunicorn("create_buy_order", args.workers[0], {**create_env, "DB_POOL_SIZE": str(pool)})
            put_runs.append(wrk("warm-up", create.url or "", 8, 2, "put.lua", str(random.getrandbits(30))))
            results["pool_variant"][pool] = {}
            for c in [c for c in args.clients if c >= 32]:
                name = f"PUT {args.workers[0]}w DB_POOL_SIZE={pool}"
                run = wrk(name, create.url or "", c, args.seconds, "put.lua", str(random.getrandbits(30)))
                results["pool_variant"][pool][c] = run
                put_runs.append(run)
            procs.stop(create)
        coinbase_window_end = time.monotonic()
        # wrk's warm-ups made orders too: count them by difference with the runs.
        orders_after = scalar(db_url(write_db), "SELECT count(*) FROM buy_order WHERE request_id IS DISTINCT FROM 'pgbench'")
        results["orders_stored"] = orders_after - orders_before
        results["put_2xx"] = sum(run.requests - run.non_2xx for run in put_runs)
        results["pgbench_after"] = pgbench_round("after")
        results["pgbench_mean"] = {
            key: {c: (results["pgbench_before"][key][c].tps + results["pgbench_after"][key][c].tps) / 2 for c in args.clients}
            for key in ("a", "b")
        }
        best_workers, best_clients = max(
            ((w, c) for w in args.workers for c in args.clients), key=lambda wc: results["put"][wc[0]][wc[1]].ok_rate
        )
        max_rate = results["put"][best_workers][best_clients].ok_rate
        results["max_rate"] = (max_rate, best_workers, best_clients)
        results["coinbase"] = coinbase_stats(coinbase.calls.stamps, coinbase_window_start, coinbase_window_end)

        # 4. Profile of the create path under load (py-spy on every worker, via the master).
        create = procs.gunicorn("create_buy_order", best_workers, create_env)
        results["profile"] = profile_create(create, best_clients if best_clients >= 8 else 32, args)
        procs.stop(create)

        # 5. PUT latency at half the max rate, open loop (relay and worker stopped).
        half = max_rate / 2
        results["half_rate"] = half
        create = procs.gunicorn("create_buy_order", best_workers, create_env)
        wrk("warm-up", create.url or "", 8, 2, "put.lua", str(random.getrandbits(30)))
        latency_seconds = args.seconds * 2
        log(f"PUT latency: open loop at {half:.0f}/s for {latency_seconds:.0f}s")
        results["latency"] = run_open_loop(create.url or "", half, latency_seconds)
        log_open_loop("PUT latency", results["latency"])

        # 6. read_model_sync drain: fill the queue, then start the worker.
        log(f"publishing {args.drain_events:,} events")
        base_sequence = 1_000_000_000
        publish_s = publish_events(amqp_url, args.drain_events, base_sequence)
        log(f"published in {publish_s:.1f}s")
        sync_env = {"READ_MODEL_DB_URL": db_url(read_db, True), "AMQP_URL": amqp_url, "READ_MODEL_SYNC_METRICS_PORT": "0"}
        t0 = time.monotonic()
        sync = procs.start("read_model_sync", [sys.executable, "-m", "btc_orders.services.read_model_sync"], sync_env)
        series = []
        rc = psycopg2.connect(db_url(read_db))
        rc.autocommit = True
        cur = rc.cursor()
        first_seen = None
        while True:
            cur.execute("SELECT count(*) FROM buy_order_view WHERE sequence >= %s", (base_sequence,))
            n = cur.fetchone()[0]
            now = time.monotonic() - t0
            series.append((now, n))
            if n and first_seen is None:
                first_seen = now
            if n >= args.drain_events:
                break
            if sync.process.poll() is not None:
                raise SystemExit(f"read_model_sync exited:\n{sync.log_text}")
            time.sleep(0.1)
        rc.close()
        results["drain_series"] = series
        results["drain_events"] = args.drain_events
        results["drain"] = {
            "wall": series[-1][0],
            "first_seen": first_seen or 0,
            "rate_wall": args.drain_events / series[-1][0],
            "rate_applying": args.drain_events / max(1e-6, series[-1][0] - (first_seen or 0)),
            "publish_s": publish_s,
        }
        log(f"drain: {results['drain']}")

        # 7. outbox_relay drain: the newest unsent outbox rows of the PUT runs (the rest, and pgbench's
        # rows, marked sent), with read_model_sync running.
        backlog = args.relay_backlog
        execute(
            db_url(write_db),
            "UPDATE outbox SET sent_at = now() WHERE sent_at IS NULL AND (request_id = 'pgbench' "
            "OR id <= (SELECT max(id) FROM outbox WHERE request_id IS DISTINCT FROM 'pgbench') - %s)",
            (backlog,),
        )
        backlog = scalar(db_url(write_db), "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        t0 = time.monotonic()
        relay = procs.start(
            "outbox_relay",
            [sys.executable, "-m", "btc_orders.services.outbox_relay"],
            {"WRITE_MODEL_DB_URL": db_url(write_db, True), "AMQP_URL": amqp_url, "OUTBOX_RELAY_METRICS_PORT": "0"},
        )
        relay_series = []
        while True:
            left = scalar(db_url(write_db), "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            relay_series.append((time.monotonic() - t0, backlog - left))
            if left == 0 or time.monotonic() - t0 > 180:
                break
            if relay.process.poll() is not None:
                raise SystemExit(f"outbox_relay exited:\n{relay.log_text}")
            time.sleep(0.2)
        first = next((t for t, n in relay_series if n > 0), 0.0)
        sent = relay_series[-1][1]
        results["relay"] = {
            "backlog": backlog, "sent": sent, "wall": relay_series[-1][0], "first": first,
            "rate_wall": sent / relay_series[-1][0], "rate_sending": sent / max(1e-6, relay_series[-1][0] - first),
        }  # fmt: skip
        log(f"relay drain: {results['relay']}")
        # Let the worker project that backlog before the lag run.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            projected = scalar(db_url(read_db), "SELECT count(*) FROM buy_order_view WHERE sequence < %s", (base_sequence,))
            if projected >= sent:
                break
            time.sleep(0.2)

        # 8. Projection lag at half the max rate: relay and worker running, fetch_buy_orders serving.
        # fetch serves only the lag probes here (about 10 GETs a second): a small pool keeps every
        # process of the run within the local Postgres's max_connections (100).
        fetch = procs.gunicorn("fetch_buy_orders", 2, {"READ_MODEL_DB_URL": db_url(read_db, True), "DB_POOL_SIZE": "5"})
        time.sleep(1)
        lag_seconds = args.seconds * 2 if args.quick else 45
        first_seq = scalar(db_url(write_db), "SELECT coalesce(max(sequence), 0) FROM buy_order")
        lag_t0_wall = time.time()
        log(f"projection lag: open loop at {half:.0f}/s for {lag_seconds:.0f}s")
        results["lag_run"] = run_open_loop(create.url or "", half, lag_seconds, fetch_url=fetch.url)
        log_open_loop("lag run", results["lag_run"])
        time.sleep(2)
        created = execute(
            db_url(write_db),
            "SELECT sequence, extract(epoch from created_at) FROM buy_order WHERE sequence > %s AND request_id IS DISTINCT FROM 'pgbench'",
            (first_seq,),
        )
        applied = dict(
            execute(db_url(read_db), "SELECT sequence, extract(epoch from applied_at) FROM buy_order_view WHERE sequence > %s AND sequence < %s", (first_seq, base_sequence))
        )
        results["db_lag"] = [
            (float(c) - lag_t0_wall, (float(applied[s]) - float(c)) * 1000) for s, c in created if s in applied
        ]
        results["db_lag_missing"] = sum(1 for s, _ in created if s not in applied)
        results["lag_samples"] = results["lag_run"].lag
        results["latency_series"] = {
            "PUT /buy_order (relay and worker stopped)": results["latency"].put_latency_ms,
            "PUT /buy_order (relay and worker running)": results["lag_run"].put_latency_ms,
            "projection lag, sampled via HTTP": [v for _, v in results["lag_run"].lag],
            "projection lag, every order (DB timestamps)": [v for _, v in results["db_lag"]],
        }
        procs.stop(relay)
        procs.stop(sync)
        procs.stop(create)

        # 8. GET /buy_orders against the trivial endpoint, same server settings (2 workers).
        results["get"] = {}
        rows = scalar(db_url(read_db), "SELECT count(*) FROM buy_order_view")
        results["read_rows"] = rows
        trivial = procs.gunicorn("fetch_buy_orders", 2, {}, app="trivial_app:app")
        for c in (8, 32):
            results["get"][("trivial", c)] = wrk("trivial GET /ping", f"{trivial.url}/ping", c, args.seconds, "get.lua")
            for size in (10, 100):
                results["get"][(size, c)] = wrk(
                    f"GET page_size={size}", f"{fetch.url}/buy_orders?page_size={size}", c, args.seconds, "get.lua"
                )
            results["get"][("healthz", c)] = wrk("GET /healthz", f"{fetch.url}/healthz", c, args.seconds, "get.lua")
        results["read_profile"] = profile(fetch, f"{fetch.url}/buy_orders?page_size=100", "get.lua", 32, args)
        procs.stop(trivial)
        procs.stop(fetch)
        procs.stop(btc_price)
        results["coinbase_all"] = coinbase_stats(coinbase.calls.stamps, 0, time.monotonic())

        # 9. Paging depth (its own section of docs/benchmarks.md).
        if not args.no_paging:
            signal.alarm(0)
            remaining = args.limit - (time.monotonic() - started)
            log("paging depth: bench/paging.py")
            command = [sys.executable, str(BENCH / "paging.py")] + (["--quick"] if args.quick else [])
            if args.no_write:
                command.append("--no-write")
            try:
                subprocess.run(command, check=True, timeout=max(300, remaining), stdout=subprocess.DEVNULL)
                results["paging"] = "ran"
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                results["paging"] = f"failed: {error}"
        results["load_end"] = os.getloadavg()
        results["elapsed"] = time.monotonic() - started
        names = plots(results, REPO / "docs" / "img", args.quick) if not args.no_write else {}
        section = report(results, info, args, names)
        print(section)
        if not args.no_write:
            write_doc(REPO / "docs" / "benchmarks.md", section)
            log("wrote docs/benchmarks.md and docs/img/bench_*.png")
        return 0
    finally:
        signal.alarm(0)
        procs.stop_all()
        coinbase.stop()
        conn = admin()
        with conn.cursor() as cursor:
            for name in (write_db, read_db):
                with contextlib.suppress(Exception):
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        with contextlib.suppress(Exception):
            rabbitmqctl("delete_vhost", vhost)
        log(f"cleaned up (databases {write_db}, {read_db}, vhost {vhost})")


def log_open_loop(label: str, run: OpenLoop) -> None:
    lat = run.put_latency_ms
    log(
        f"{label}: {len(lat)} PUTs, statuses {dict(run.statuses)}, p50 {pct(lat, 50):.1f} p99 {pct(lat, 99):.1f} ms, "
        f"late starts {run.late_starts}, lag samples {len(run.lag)} (unseen {run.lag_unseen})"
        + (f", lag p50 {pct([v for _, v in run.lag], 50):.1f} p99 {pct([v for _, v in run.lag], 99):.1f} ms" if run.lag else "")
    )


def coinbase_stats(stamps: list[tuple[float, str]], start: float, end: float) -> dict[str, dict[str, float]]:
    out = {}
    for currency in ("EUR", "GBP", "USD"):
        times = sorted(t for t, c in stamps if c == currency and start <= t <= end)
        window = 60.0
        max_in_window = 0
        j = 0
        for i, t in enumerate(times):  # calls in [t, t + 60)
            while j < len(times) and times[j] < t + window:
                j += 1
            max_in_window = max(max_in_window, j - i)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        span = end - start
        out[currency] = {
            "calls": len(times),
            "per_minute": len(times) / span * 60 if span else 0,
            "max_in_60s": max_in_window if span >= window else float("nan"),
            "min_gap": min(gaps) if gaps else float("nan"),
            "span": span,
        }
    return out


def profile_create(create: Proc, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    return profile(create, create.url or "", "put.lua", clients, args, str(random.getrandbits(30)))


def profile(proc: Proc, url: str, script: str, clients: int, args: argparse.Namespace, *script_args: str) -> dict[str, Any]:
    """py-spy on every worker (via the gunicorn master) during one wrk run, after a warm-up."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        return {"error": "py-spy not installed (pip install py-spy==0.4.3)"}
    seconds = max(5, args.seconds)
    wrk("warm-up", url, 8, 3, script, *script_args)  # before the profile starts
    raw = Path(tempfile.mkdtemp(prefix="bench_pyspy_")) / "profile.txt"
    spy = subprocess.Popen(
        [str(py_spy), "record", "--subprocesses", "-p", str(proc.process.pid), "-d", str(int(seconds) + 2),
         "-r", "200", "--format", "raw", "-o", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1)
    label = f"{proc.name} {len(proc.worker_pids())}w under py-spy"
    run = wrk(label, url, clients, seconds, script, *script_args)
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
    if not raw.exists():
        return {"error": f"py-spy wrote nothing: {spy.stderr.read().decode()[-500:] if spy.stderr else ''}"}
    own, inclusive, samples = profile_summary(raw)
    shutil.rmtree(raw.parent, ignore_errors=True)
    return {"own": own, "inclusive": inclusive, "samples": samples, "rate": run.ok_rate, "clients": clients}


# ---------------------------------------------------------------------------
# The report


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(r: dict[str, Any], info: dict[str, str], args: argparse.Namespace, names: dict[str, str]) -> str:
    clients = args.clients
    max_rate, best_w, best_c = r["max_rate"]
    c32 = 32 if 32 in clients else clients[-1]
    a32, b32 = r["pgbench_mean"]["a"][c32], r["pgbench_mean"]["b"][c32]
    put32 = max(r["put"][w][c32].ok_rate for w in args.workers)
    put32_w = max(args.workers, key=lambda w: r["put"][w][c32].ok_rate)
    lat = r["latency"].put_latency_ms
    lat_p99 = pct(lat, 99)
    lag_http = [v for _, v in r["lag_samples"]]
    lag_db = [v for _, v in r["db_lag"]]
    drain = r["drain"]
    get = r["get"]
    cb = r["coinbase"]
    limit_per_min = 60 / RATE_TTL_SECONDS
    get_ratios = {(size, c): get[(size, c)].rate / get[("trivial", c)].rate for size in (10, 100) for c in (8, 32)}
    lines: list[str] = []
    w = lines.append
    w("## The suite: the system under load against same-run ceilings")
    w("")
    mode = "quick mode (`bench/run_all.sh --quick`)" if args.quick else "full mode (`bench/run_all.sh`)"
    w(f"{mode}, {info['date']}, {r['elapsed']:.0f}s in all. Written by `bench/suite.py`; rerun to refresh.")
    w("")
    w(
        f"Machine: {info['nproc']} CPUs (`nproc`; {info['cpu']}), {info['memory']} memory, PostgreSQL {info['postgres']} "
        f"({info['pgbench']}), RabbitMQ {info['rabbitmq']}, Python {info['python']}, {info['wrk']}, Linux {info['kernel']}. "
        f"Load average {r['load_start'][0]:.2f} at the start, {r['load_end'][0]:.2f} at the end. "
        "Postgres, RabbitMQ, every service, the load generators and other work (test runs) share these 2 cores, so "
        "absolute figures drift from run to run: every goal is a ratio against a ceiling measured in the same run, "
        "minutes apart, and the pgbench ceilings are measured both before and after the HTTP runs (their mean is the "
        "ceiling; both are shown)."
    )
    w("")
    w(
        "Setup: the services under gunicorn with uvicorn workers from `docker/gunicorn.conf.py` (as in production; "
        "`btc_price` one worker), `LOG_LEVEL=WARNING`, each process in an empty temporary working directory (no `.env`), "
        f"throwaway databases on the local Postgres and a throwaway RabbitMQ vhost, `RATE_TTL_SECONDS={RATE_TTL_SECONDS:g}`, "
        "`BTC_CAP=21000000` (the cap never refuses), Coinbase played by `codebase/tests/support/fake_coinbase.py`. "
        "Throughput: `wrk -t1` (closed loop: each client sends its next request when the answer comes), "
        f"{args.seconds:g}s per point, unique v4 idempotence keys per request (`bench/put.lua`, seeded per run and thread), "
        "currencies round-robin. Latency and lag: an open-loop generator (`open_loop` in `bench/suite.py`, asyncio, requests "
        "started on a fixed schedule whatever the answers, latency counted from the scheduled start)."
    )
    w("")
    w("### Goals")
    w("")
    w("| benchmark | figure | ceiling (same run) | ratio | goal | verdict |")
    w("|---|---:|---:|---:|---|---|")
    w(
        f"| `PUT /buy_order` at {c32} clients ({put32_w} workers) vs (a) own transaction in pgbench | {put32:,.0f} orders/s | "
        f"{a32:,.0f} tx/s | {put32 / a32:.2f} | ≥ 0.40 | {verdict(put32 / a32 >= 0.40)} |"
    )
    w(
        f"| `PUT /buy_order` at {c32} clients vs (b) naive one-row cap in pgbench | {put32:,.0f} orders/s | {b32:,.0f} tx/s | "
        f"{put32 / b32:.2f} | ≥ 1.0 | {verdict(put32 / b32 >= 1.0)} |"
    )
    w(
        f"| `PUT /buy_order` latency at half the max rate ({r['half_rate']:.0f}/s) | p99 {lat_p99:.1f} ms (p50 {pct(lat, 50):.1f}) | – | – | p99 ≤ 50 ms | "
        f"{verdict(lat_p99 <= 50)} |"
    )
    for size in (10, 100):
        ratio = get_ratios[(size, 32)]
        w(
            f"| `GET /buy_orders?page_size={size}` at 32 clients | {get[(size, 32)].rate:,.0f} req/s | "
            f"{get[('trivial', 32)].rate:,.0f} req/s (trivial FastAPI) | {ratio:.2f} | ≥ 0.50 | {verdict(ratio >= 0.5)} |"
        )
    w("| paging depth | see the Paging depth section below | `OFFSET` | | last/first p99 ≤ 1.10 | see below |")
    w(
        f"| projection lag at {r['half_rate']:.0f} orders/s (201 to 200 on `GET /buy_orders/{{id}}`) | p99 {pct(lag_http, 99):.1f} ms "
        f"(p50 {pct(lag_http, 50):.1f}; {len(lag_http)} sampled orders, {r['lag_run'].lag_unseen} never seen) | – | – | p99 ≤ 100 ms | "
        f"{verdict(pct(lag_http, 99) <= 100 and r['lag_run'].lag_unseen == 0)} |"
    )
    drain_ratio = drain["rate_wall"] / max_rate
    w(
        f"| `read_model_sync` drain of {r['drain_events']:,} queued events | {drain['rate_wall']:,.0f} events/s "
        f"(from process start; {drain['rate_applying']:,.0f}/s from the first row) | max create rate {max_rate:,.0f}/s | "
        f"{drain_ratio:.1f}× | ≥ 3× | {verdict(drain_ratio >= 3)} |"
    )
    worst = max(cb[c]["max_in_60s"] for c in cb) if all(cb[c]["max_in_60s"] == cb[c]["max_in_60s"] for c in cb) else None
    per_min = max(cb[c]["per_minute"] for c in cb)
    cb_ok = per_min <= limit_per_min and (worst is None or worst <= limit_per_min)
    w(
        f"| Coinbase calls per minute per currency at max load | max {per_min:.1f}/min"
        + (f", at most {worst:.0f} in any 60 s" if worst is not None else "")
        + f" | 60 / `RATE_TTL_SECONDS` = {limit_per_min:.0f} | {per_min / limit_per_min:.2f} | never above | {verdict(cb_ok)} |"
    )
    w("")
    w("### 1. `PUT /buy_order` throughput against concurrency")
    w("")
    w(f"![throughput against concurrency](img/{names.get('throughput', 'bench_throughput.png')})")
    w("")
    header = "| clients | " + " | ".join(f"PUT {wk} workers orders/s (p50 / p99 ms)" for wk in args.workers)
    header += " | pgbench (a) tx/s, before / after | pgbench (b) tx/s, before / after | PUT ÷ (a) | PUT ÷ (b) |"
    w(header)
    w("|---:|" + "---:|" * (len(args.workers) + 4))
    for c in clients:
        best = max(r["put"][wk][c].ok_rate for wk in args.workers)
        cells = [
            f"{r['put'][wk][c].ok_rate:,.0f} ({r['put'][wk][c].p50_ms:.1f} / {r['put'][wk][c].p99_ms:.1f})" for wk in args.workers
        ]
        a, b = r["pgbench_mean"]["a"][c], r["pgbench_mean"]["b"][c]
        w(
            f"| {c} | " + " | ".join(cells)
            + f" | {r['pgbench_before']['a'][c].tps:,.0f} / {r['pgbench_after']['a'][c].tps:,.0f} "
            f"| {r['pgbench_before']['b'][c].tps:,.0f} / {r['pgbench_after']['b'][c].tps:,.0f} | {best / a:.2f} | {best / b:.2f} |"
        )
    if 32 in r["pgbench_before"].get("c", {}):
        one = (r["pgbench_before"]["c"][32].tps + r["pgbench_after"]["c"][32].tps) / 2
        w("")
        w(
            f"For the record: the write as it was before the one-statement tuning (`bench/pgbench/five_statements.sql`, "
            f"BEGIN, three statements, COMMIT: five round trips) runs at {one:,.0f} tx/s at 32 clients (before / after: "
            f"{r['pgbench_before']['c'][32].tps:,.0f} / {r['pgbench_after']['c'][32].tps:,.0f}), "
            f"{one / r['pgbench_mean']['a'][32]:.2f}× the one statement of ceiling (a)."
        )
    errors = sum(r["put"][wk][c].non_2xx + r["put"][wk][c].socket_errors for wk in args.workers for c in clients)
    w("")
    w(
        f"Max create rate: {max_rate:,.0f} orders/s ({best_w} workers, {best_c} clients). Non-2xx answers and socket errors "
        f"across all PUT runs: {errors}. Orders stored by the PUT runs (warm-ups included) {r['orders_stored']:,}, 2xx answers "
        f"counted by wrk {r['put_2xx']:,} (wrk does not count the answers still in flight when a run ends, so stored may "
        "exceed answered by up to the client count per run; a replayed key would make stored fall short). The pgbench scripts are `bench/pgbench/project.sql` (the service's own fast-path "
        "statement: take from one of 16 random cap slots, insert the order from that, insert the outbox row with an "
        "event-sized payload, all in one statement with data-modifying CTEs) and "
        "`bench/pgbench/naive.sql` (`UPDATE` one cap row conditionally, insert the order), simple query protocol like "
        "the service, against the same migrated write-model database the service writes to."
    )
    w("")
    wc = r["wrk_ceiling_put"]
    w(
        f"**The load generator is not the bottleneck.** wrk running `bench/put.lua` against a trivial FastAPI `PUT /buy_order` "
        f"(`bench/trivial_app.py`, same gunicorn settings, 2 workers) at 32 clients: {wc.rate:,.0f} req/s — "
        f"{wc.rate / max_rate:.1f}× the max create rate, and that figure is bounded by the trivial Python server, not by wrk: "
        f"wrk used {wc.wrk_cpu:.2f} of a core there, and at most "
        f"{max(r['put'][wk][c].wrk_cpu for wk in args.workers for c in clients):.2f} of a core during the create runs."
    )
    w("")
    if r.get("pool_variant"):
        variants = r["pool_variant"]
        w(
            f"Configuration variants (no code change), {args.workers[0]} workers: `DB_POOL_SIZE` is each worker's "
            f"connections and also its request threads (capped at the pool, no overflow), so it is the worker's "
            f"concurrency. Default {DEFAULT_POOL_SIZE}; {', '.join(str(p) for p in variants)} for comparison."
        )
        w("")
        w(
            f"| clients | default {DEFAULT_POOL_SIZE}, orders/s (p99 ms) | "
            + " | ".join(f"`DB_POOL_SIZE={p}`, orders/s (p99 ms)" for p in variants)
            + " |"
        )
        w("|---:|---:|" + "---:|" * len(variants))
        for c in next(iter(variants.values())):
            base = r["put"][args.workers[0]][c]
            cells = [f"{v[c].ok_rate:,.0f} ({v[c].p99_ms:.0f}), {100 * (v[c].ok_rate / base.ok_rate - 1):+.0f}%" for v in variants.values()]
            w(f"| {c} | {base.ok_rate:,.0f} ({base.p99_ms:.0f}) | " + " | ".join(cells) + " |")
        w("")
    w("### 2. Latency at half the max create rate (open loop)")
    w("")
    w(f"![latency percentiles](img/{names.get('latency', 'bench_latency.png')})")
    w("")
    w("| series | count | p50 | p90 | p99 | p99.9 | max (ms) |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for label, values in r["latency_series"].items():
        w(
            f"| {label} | {len(values):,} | {pct(values, 50):.1f} | {pct(values, 90):.1f} | {pct(values, 99):.1f} | "
            f"{pct(values, 99.9):.1f} | {max(values) if values else float('nan'):.1f} |"
        )
    w("")
    lr = r["latency"]
    w(
        f"{lr.rate:.0f} requests/s for {lr.seconds:.0f}s, statuses {dict(lr.statuses)}, {lr.late_starts} requests started "
        f"more than 5 ms late by the generator itself (it runs at nice -10), {lr.connections} connections opened (one per "
        "request in flight: a stalled server makes the generator open more, as real clients would). The second PUT row is the lag run below (relay, worker and "
        "fetch_buy_orders sharing the cores)."
    )
    w("")
    w("### 3. `GET /buy_orders` against a trivial endpoint")
    w("")
    w(f"fetch_buy_orders, 2 workers, read model of {r['read_rows']:,} orders; the trivial endpoint is `GET /ping` of `bench/trivial_app.py` "
      "(`async def` returning a constant) under the same gunicorn settings and worker count; `GET /healthz` is the service's "
      "own probe (its full middleware stack, no database).")
    w("")
    w("| clients | trivial `/ping` req/s | `/healthz` req/s | page_size=10 req/s (p99 ms) | ÷ trivial | page_size=100 req/s (p99 ms) | ÷ trivial |")
    w("|---:|---:|---:|---:|---:|---:|---:|")
    for c in (8, 32):
        w(
            f"| {c} | {get[('trivial', c)].rate:,.0f} | {get[('healthz', c)].rate:,.0f} | {get[(10, c)].rate:,.0f} ({get[(10, c)].p99_ms:.1f}) | "
            f"{get_ratios[(10, c)]:.2f} | {get[(100, c)].rate:,.0f} ({get[(100, c)].p99_ms:.1f}) | {get_ratios[(100, c)]:.2f} |"
        )
    w("")
    w("### 4. Projection lag (201 to visible) at half the max create rate")
    w("")
    w(f"![lag over time](img/{names.get('lag', 'bench_lag.png')})")
    w("")
    run = r["lag_run"]
    w(
        f"{run.rate:.0f} orders/s for {run.seconds:.0f}s through `create_buy_order` with `outbox_relay`, `read_model_sync` "
        f"and `fetch_buy_orders` (2 workers) running. Sampled via HTTP: about 10 orders a second are followed by "
        f"`GET /buy_orders/{{id}}` from their 201 until a 200, every 5 ms for 200 ms then every 25 ms ({len(lag_http)} orders, "
        f"{run.polls:,} polls; the figure includes one GET round trip and the polling resolution): p50 {pct(lag_http, 50):.1f}, p90 {pct(lag_http, 90):.1f}, "
        f"p99 {pct(lag_http, 99):.1f}, max {max(lag_http) if lag_http else float('nan'):.1f} ms. Every order, from the databases' own "
        f"clocks (`buy_order_view.applied_at` − `buy_order.created_at`, both transaction start times, so the order's own "
        f"transaction is included and the HTTP hop to fetch is not): {len(lag_db):,} orders, p50 {pct(lag_db, 50):.1f}, "
        f"p99 {pct(lag_db, 99):.1f}, max {max(lag_db) if lag_db else float('nan'):.1f} ms; not projected 2 s after the run: "
        f"{r['db_lag_missing']}."
    )
    w("")
    w("### 5. Drain rates: `read_model_sync` and `outbox_relay`")
    w("")
    w(f"![drain](img/{names.get('drain', 'bench_drain.png')})")
    w("")
    w(
        f"{r['drain_events']:,} valid `buy_order.created` events published straight to the exchange `buy_orders` (topology "
        f"declared with `declare_topology`, persistent, without publisher confirms, then the queue depth checked; {drain['publish_s']:.1f}s) with the worker "
        f"stopped, then `read_model_sync` started (defaults: `SYNC_PREFETCH=500`): all in the read model "
        f"{drain['wall']:.1f}s after the process started (first row at {drain['first_seen']:.1f}s, Python start-up "
        f"included): {drain['rate_wall']:,.0f} events/s from the start, {drain['rate_applying']:,.0f} events/s once applying; "
        f"{drain_ratio:.1f}× the max create rate (goal ≥ 3×)."
    )
    w("")
    rl = r["relay"]
    w(
        f"`outbox_relay` draining a backlog of {rl['backlog']:,} unsent outbox rows (the newest of the PUT runs; defaults "
        f"`OUTBOX_BATCH_SIZE=500`), with the worker running: {rl['sent']:,} published in {rl['wall']:.1f}s from process start "
        f"(first at {rl['first']:.1f}s): {rl['rate_wall']:,.0f} events/s from the start, {rl['rate_sending']:,.0f} events/s once "
        f"sending — {rl['rate_sending'] / max_rate:.2f}× the max create rate. The relay publishes a whole batch, then waits once "
        "for the broker's confirms of all of it (a quorum queue confirms after its log is written); before that change it "
        "waited for each message's confirm, about 600 events/s, below the create rate under load (see the tuning log)."
    )
    w("")
    w("### 6. Coinbase calls at max load")
    w("")
    w("| currency | calls during the PUT throughput runs | per minute | most in any 60 s | shortest gap (s) |")
    w("|---|---:|---:|---:|---:|")
    for currency, s in cb.items():
        w(
            f"| {currency} | {s['calls']} in {s['span']:.0f}s | {s['per_minute']:.1f} | "
            f"{'n/a (run shorter than 60 s)' if s['max_in_60s'] != s['max_in_60s'] else int(s['max_in_60s'])} | {s['min_gap']:.2f} |"
        )
    w("")
    w(
        f"Limit: 60 / `RATE_TTL_SECONDS` = {limit_per_min:.0f} per minute per currency. Counted by the fake Coinbase itself "
        "(a timestamp per call). `btc_price` (one process) caches and coalesces; each `create_buy_order` worker also reuses "
        "a rate for the TTL, so Coinbase sees at most one call per currency per TTL whatever the load."
    )
    w("")
    w("### 7. Where the time goes: py-spy")
    w("")
    profile_tables(w, "the create path (`PUT /buy_order`)", r["profile"])
    if "read_profile" in r:
        profile_tables(w, "the read path (`GET /buy_orders?page_size=100`)", r["read_profile"])
    return "\n".join(lines) + "\n"


PROFILE_INTERESTING = re.compile(
    r"place|_place_once|_take_from|rate \(|execute|commit|begin|connect|do_execute|json|jsonable|serialize|"
    r"validate|run_in_threadpool|run_sync|created_event|logs|event \(|metrics|inc \(|uuid4|middleware|"
    r"request_response|solve_dependencies|send|receive|_fetch|cursor|Decimal|bitcoin_satoshis|page|resource|"
    r"fetchall|_row|process_rows|dumps|get_buy_orders|read_model|Condition.wait|Runner.run|_checkout|_do_get"
)


def profile_tables(w: Any, what: str, prof: dict[str, Any]) -> None:
    if "error" in prof:
        w(f"No profile of {what}: {prof['error']}")
        w("")
        return
    w(
        f"**{what[0].upper() + what[1:]}**: `py-spy record --subprocesses --nonblocking -r 200` on the gunicorn master during a "
        f"{prof['clients']}-client wrk run ({prof['rate']:,.0f} req/s under the profiler), {prof['samples']:,} samples of "
        "active (non-idle) Python threads across the workers. Own time is the frame on top of the stack; inclusive time "
        "counts the frame and everything it calls."
    )
    w("")
    w("| own share | frame |")
    w("|---:|---|")
    for name, share in prof["own"]:
        w(f"| {share:.1f}% | `{name}` |")
    w("")
    w("| inclusive share | frame |")
    w("|---:|---|")
    shown = 0
    for name, share in prof["inclusive"]:
        if PROFILE_INTERESTING.search(name) and shown < 25:
            w(f"| {share:.1f}% | `{name}` |")
            shown += 1
    w("")


def write_doc(path: Path, section: str) -> None:
    block = f"{SECTION_START}\n{section.rstrip()}\n{SECTION_END}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures written by the scripts in `bench/`; rerun them to refresh.\n\n"
    if SECTION_START in text and SECTION_END in text:
        before, rest = text.split(SECTION_START, 1)
        _, after = rest.split(SECTION_END, 1)
        text = before + block + after.lstrip("\n") if after.strip() else before + block
        if after.strip():
            text = before + block + "\n" + after.lstrip("\n")
    elif PAGING_START in text:
        before, after = text.split(PAGING_START, 1)
        text = before + block + "\n" + PAGING_START + after
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
