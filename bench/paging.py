"""Paging-depth benchmark: keyset paging through the real fetch_buy_orders vs `OFFSET`.

What it does, all against 127.0.0.1 only:

1. creates a throwaway read-model database on the local Postgres and migrates it
   with the project's own migration code;
2. loads N orders into `buy_order_view` in SQL (`INSERT ... SELECT generate_series`),
   then `VACUUM ANALYZE`;
3. starts the real fetch_buy_orders service (gunicorn, 2 uvicorn workers, as in
   production; `--server uvicorn` for the single-process entry point);
4. measures p50/p99 latency, at several page depths, of
   - keyset via HTTP: `GET /buy_orders?page_size=10&last_reference=<id>`,
   - keyset SQL: the two statements the service runs (id -> sequence, then
     `WHERE sequence < $s ORDER BY sequence DESC LIMIT 11`), timed with psycopg2,
   - OFFSET SQL: `ORDER BY sequence DESC LIMIT 11 OFFSET k`, timed with psycopg2;
   keyset requests are interleaved round-robin across depths so that machine
   noise falls on every depth alike;
5. writes the "Paging depth" section of docs/benchmarks.md and docs/img/paging_depth.png;
6. stops the service and drops the database, whatever happened.

Usage: bench/run.sh [--quick] [--orders N] [--requests N] ...  (see --help)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg2
import psycopg2.extensions

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PAGE_SIZE = 10
GOAL_RATIO = 1.10  # last-page p99 within 10% of the first page's
SECTION_START = "<!-- paging-depth:start (written by bench/paging.py) -->"
SECTION_END = "<!-- paging-depth:end -->"
COLUMNS = "sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key"

# The row statements of the first design (the service now aggregates stored documents over the
# one-statement form below; "keyset via HTTP" times what it runs), page_size + 1 rows for has_more.
SQL_SEQUENCE_OF = "SELECT sequence FROM buy_order_view WHERE id = %s"
SQL_FIRST_PAGE = f"SELECT {COLUMNS} FROM buy_order_view ORDER BY sequence DESC LIMIT %s"
SQL_PAGE_AFTER = f"SELECT {COLUMNS} FROM buy_order_view WHERE sequence < %s ORDER BY sequence DESC LIMIT %s"
SQL_OFFSET = f"SELECT {COLUMNS} FROM buy_order_view ORDER BY sequence DESC LIMIT %s OFFSET %s"
# The reference lookup and the page in one round trip (the service's shape, minus its aggregation). No row at
# all means an unknown reference; one all-NULL row means a known reference with nothing after it.
SQL_ONE_STATEMENT = f"""
SELECT page.* FROM (SELECT sequence FROM buy_order_view WHERE id = %s) AS ref
LEFT JOIN LATERAL (
    SELECT {COLUMNS} FROM buy_order_view WHERE sequence < ref.sequence ORDER BY sequence DESC LIMIT %s
) AS page ON true
"""
METHODS = ("keyset via HTTP", "keyset SQL", "keyset SQL, one statement", "OFFSET SQL")

# Sequences 1..N; the newest (sequence N) comes first. One statement per chunk. Orders 30 s apart
# (a million span about a year), each `created_at` up to 45 s late: out of sequence order, as
# transactions that start before they draw their sequence make them. GBP is 1% of the orders.
ORDER_SPACING_S = 30
HISTORY_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SQL_LOAD = """
INSERT INTO buy_order_view
    (sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key, event_id, applied_at)
SELECT g,
       gen_random_uuid(),
       timestamptz '2026-01-01 00:00:00+00' + g * interval '30 seconds' + ((g * 37) %% 7) * interval '7.5 seconds',
       CASE WHEN g %% 100 = 0 THEN 'GBP' WHEN g %% 3 = 0 THEN 'EUR' ELSE 'USD' END,
       ((g %% 9900) + 100)::text || '.' || lpad((g %% 100)::text, 2, '0'),
       '97012.34',
       round((((g %% 9900) + 100) + (g %% 100) / 100.0) / 97012.34, 8)::text,
       gen_random_uuid(),
       gen_random_uuid(),
       timestamptz '2026-01-01 00:00:01+00' + g * interval '1 second'
FROM generate_series(%s, %s) AS g
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Database


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def sqlalchemy_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url, count=1)


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"refusing to benchmark against {host!r}: only 127.0.0.1 is allowed")


def admin_connection(pg_url: str) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(pg_url, connect_timeout=5, application_name="bench_paging_admin")
    connection.autocommit = True
    return connection


def create_database(pg_url: str, dbname: str) -> None:
    connection = admin_connection(pg_url)  # no `with connection`: psycopg2 would open a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        connection.close()


def drop_database(pg_url: str, dbname: str) -> None:
    connection = admin_connection(pg_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        connection.close()


def load_orders(db_url: str, orders: int, chunk: int = 250_000) -> float:
    started = time.perf_counter()
    connection = psycopg2.connect(db_url, application_name="bench_paging_load")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
            for low in range(1, orders + 1, chunk):
                high = min(orders, low + chunk - 1)
                cursor.execute(SQL_LOAD, (low, high))
                connection.commit()
                log(f"loaded {high:,}/{orders:,} orders ({time.perf_counter() - started:.1f}s)")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE buy_order_view")
    finally:
        connection.close()
    return time.perf_counter() - started


def ids_by_sequence(cursor: Any, sequences: list[int]) -> dict[int, str]:
    cursor.execute("SELECT sequence, id::text FROM buy_order_view WHERE sequence = ANY(%s)", (sequences,))
    return dict(cursor.fetchall())


def buffers_touched(cursor: Any, sql: str, params: tuple[Any, ...]) -> int:
    """Shared buffers (hit + read) of one execution, from EXPLAIN (ANALYZE, BUFFERS)."""
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
    plan = cursor.fetchone()[0][0]["Plan"]
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


# ---------------------------------------------------------------------------
# The service


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base_url: str
    description: str
    workdir: tempfile.TemporaryDirectory[str]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)  # our own process group only
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.workdir.cleanup()


def start_service(db_sqlalchemy_url: str, server: str, workers: int) -> Service:
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench_paging_")  # no .env there
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "READ_MODEL_DB_URL": db_sqlalchemy_url,
        "FETCH_BUY_ORDERS_PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    if server == "gunicorn":
        command = [
            sys.executable, "-m", "gunicorn", "btc_orders.asgi:fetch_buy_orders()",
            "-k", "uvicorn.workers.UvicornWorker", "-w", str(workers), "-b", f"127.0.0.1:{port}",
        ]  # fmt: skip
        description = f"gunicorn, {workers} uvicorn workers"
    else:
        command = [sys.executable, "-m", "btc_orders.services.fetch_buy_orders"]
        description = "uvicorn, one process (python -m btc_orders.services.fetch_buy_orders)"
    log_path = Path(workdir.name) / "service.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=workdir.name, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = Service(process, f"http://127.0.0.1:{port}", description, workdir, log_path)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=service.base_url, trust_env=False, timeout=2) as client:
        while True:
            if process.poll() is not None:
                output = log_path.read_text(errors="replace")
                service.stop()
                raise SystemExit(f"fetch_buy_orders exited with status {process.returncode}:\n{output}")
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                service.stop()
                raise SystemExit("fetch_buy_orders did not answer /healthz within 60s")
            time.sleep(0.2)
    log(f"fetch_buy_orders up on {service.base_url} ({description})")
    return service


# ---------------------------------------------------------------------------
# Measurements


@dataclass(frozen=True)
class Depth:
    """A page `skip` rows below the newest order; `reference` is the id of the row just above it."""

    label: str
    skip: int
    reference: str | None


@dataclass
class Samples:
    values_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        values = sorted(self.values_ms)
        if not values:
            return float("nan")
        # linear interpolation between closest ranks (numpy's default)
        position = (len(values) - 1) * q / 100
        low = int(position)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (position - low)

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def n(self) -> int:
        return len(self.values_ms)


def timed(action: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action(*args)
    return (time.perf_counter() - started) * 1000, result


def http_page(client: httpx.Client, depth: Depth) -> list[str]:
    params: dict[str, Any] = {"page_size": PAGE_SIZE}
    if depth.reference is not None:
        params["last_reference"] = depth.reference
    response = client.get("/buy_orders", params=params)
    if response.status_code != 200:
        raise RuntimeError(f"GET /buy_orders {params} -> {response.status_code}: {response.text[:300]}")
    return [order["id"] for order in response.json()["buy_orders"]]


def one_statement_page(cursor: Any, depth: Depth) -> list[str]:
    if depth.reference is None:
        cursor.execute(SQL_FIRST_PAGE, (PAGE_SIZE + 1,))
    else:
        cursor.execute(SQL_ONE_STATEMENT, (depth.reference, PAGE_SIZE + 1))
    return [str(row[1]) for row in cursor.fetchall()[:PAGE_SIZE] if row[1] is not None]


def keyset_sql_page(cursor: Any, depth: Depth) -> list[str]:
    if depth.reference is None:
        cursor.execute(SQL_FIRST_PAGE, (PAGE_SIZE + 1,))
    else:
        cursor.execute(SQL_SEQUENCE_OF, (depth.reference,))
        (after,) = cursor.fetchone()
        cursor.execute(SQL_PAGE_AFTER, (after, PAGE_SIZE + 1))
    return [str(row[1]) for row in cursor.fetchall()[:PAGE_SIZE]]


def offset_sql_page(cursor: Any, depth: Depth) -> list[str]:
    cursor.execute(SQL_OFFSET, (PAGE_SIZE + 1, depth.skip))
    return [str(row[1]) for row in cursor.fetchall()[:PAGE_SIZE]]


@dataclass(frozen=True)
class Case:
    """A filtered (or backward) page through the service: `params` plus a reference, if any."""

    label: str
    params: tuple[tuple[str, str], ...]
    reference: tuple[str, str] | None  # ("last_reference" | "first_reference", id)
    expected: tuple[str, ...]  # the page's ids, computed in SQL


def filtered_cases(cursor: Any, orders: int) -> tuple[list[Case], list[tuple[str, str, str]]]:
    """The filtered pages to time, and the ratios (name, numerator, denominator) the goals are on.

    Every expected page is computed with plain SQL (`OFFSET` over the filtered set), so the
    service's answers are checked before they are timed.
    """
    day = dt.timedelta(days=1)
    newest = HISTORY_START + dt.timedelta(seconds=orders * ORDER_SPACING_S)
    filters: dict[str, list[tuple[str, str]]] = {
        "GBP (1% of orders)": [("currency", "GBP")],
        "EUR + GBP": [("currency", "EUR"), ("currency", "GBP")],
        "far-past day": [("created_gte", HISTORY_START.isoformat()), ("created_lt", (HISTORY_START + day).isoformat())],
        "newest day": [("created_gte", (newest - day).isoformat())],
        "GBP in the far-past week": [
            ("currency", "GBP"),
            ("created_gte", HISTORY_START.isoformat()),
            ("created_lt", (HISTORY_START + 7 * day).isoformat()),
        ],
    }
    cases: list[Case] = []
    ratios: list[tuple[str, str, str]] = []

    def where(params: list[tuple[str, str]]) -> tuple[str, list[Any]]:
        parts, values = ["true"], []
        currencies = [value for name, value in params if name == "currency"]
        if currencies:
            parts.append("currency = ANY(%s)")
            values.append(currencies)
        for name, op in (("created_gte", ">="), ("created_lt", "<")):
            for key, value in params:
                if key == name:
                    parts.append(f"created_at {op} %s")
                    values.append(value)
        return " AND ".join(parts), values

    def page_at(params: list[tuple[str, str]], skip: int) -> tuple[str, ...]:
        clause, values = where(params)
        cursor.execute(
            f"SELECT id::text FROM buy_order_view WHERE {clause} ORDER BY sequence DESC OFFSET %s LIMIT %s",
            (*values, skip, PAGE_SIZE),
        )
        return tuple(row[0] for row in cursor.fetchall())

    for name, params in filters.items():
        clause, values = where(params)
        cursor.execute(f"SELECT count(*) FROM buy_order_view WHERE {clause}", values)
        (count,) = cursor.fetchone()
        if count < 3 * PAGE_SIZE:
            raise SystemExit(f"the filter {name} selects only {count} orders")
        last_skip = count - PAGE_SIZE
        reference = page_at(params, last_skip - 1)[0]
        first = Case(f"{name}: first page", tuple(params), None, page_at(params, 0))
        last = Case(f"{name}: last page", tuple(params), ("last_reference", reference), page_at(params, last_skip))
        cases += [first, last]
        ratios.append((f"{name}, last ÷ first page", last.label, first.label))
    far, near = "far-past day: first page", "newest day: first page"
    ratios.append(("far-past day ÷ newest day (first pages)", far, near))

    # the newer direction: the page just above the oldest order, against the page just above the
    # newest page (both served newest first)
    for name, params in (("unfiltered", []), ("GBP (1% of orders)", [("currency", "GBP")])):
        clause, values = where(params)
        cursor.execute(f"SELECT count(*) FROM buy_order_view WHERE {clause}", values)
        (count,) = cursor.fetchone()
        oldest = page_at(params, count - 1)[0]
        below_top = page_at(params, PAGE_SIZE)[0]
        deep = Case(
            f"{name}, newer: above the oldest", tuple(params), ("first_reference", oldest),
            page_at(params, count - 1 - PAGE_SIZE),
        )  # fmt: skip
        top = Case(f"{name}, newer: the newest page", tuple(params), ("first_reference", below_top), page_at(params, 0))
        cases += [deep, top]
        ratios.append((f"{name}, newer direction: deepest ÷ top", deep.label, top.label))
    return cases, ratios


def case_page(client: httpx.Client, case: Case) -> list[str]:
    params = [("page_size", str(PAGE_SIZE)), *case.params, *([case.reference] if case.reference else [])]
    response = client.get("/buy_orders", params=params)
    if response.status_code != 200:
        raise RuntimeError(f"GET /buy_orders {params} -> {response.status_code}: {response.text[:300]}")
    return [order["id"] for order in response.json()["buy_orders"]]


def filtered_report(
    cases: list[Case], ratios: list[tuple[str, str, str]], samples: dict[str, Samples]
) -> tuple[str, bool]:
    met_all = True
    lines = [
        "",
        "### Filtered pages and the newer direction",
        "",
        (
            "Through the service, interleaved round-robin with the same client: currency filters (GBP is 1% of "
            f"the orders), time ranges (orders {ORDER_SPACING_S} s apart from {HISTORY_START:%Y-%m-%d}, a year "
            "of them, each `created_at` up to 45 s out of sequence order), both combined, and `first_reference` "
            "pages. Every page was first checked against plain SQL."
        ),
        "",
        "| goal | ratio of p99 | met (≤ 1.10) |",
        "|---|---:|---|",
    ]
    for name, numerator, denominator in ratios:
        ratio = samples[numerator].p99 / samples[denominator].p99
        met = ratio <= GOAL_RATIO
        met_all &= met
        lines.append(f"| {name} | {ratio:.2f} | {'met' if met else '**not met**'} |")
    lines += ["", "| page | p50 / p99 (ms) |", "|---|---:|"]
    for case in cases:
        lines.append(f"| {case.label} | {fmt(samples[case.label].p50)} / {fmt(samples[case.label].p99)} |")
    return "\n".join(lines) + "\n", met_all


def interleaved(depths: list[Depth], fetch: Callable[[Depth], Any], warmup: int, requests: int) -> dict[str, Samples]:
    """Round-robin over the depths, `warmup` unrecorded rounds, then `requests` recorded ones."""
    results = {depth.label: Samples() for depth in depths}
    for round_number in range(warmup + requests):
        for depth in depths:
            elapsed, _ = timed(fetch, depth)
            if round_number >= warmup:
                results[depth.label].values_ms.append(elapsed)
    return results


def budgeted(
    depths: list[Depth], fetch: Callable[[Depth], Any], warmup: int, requests: int, budget_s: float, minimum: int
) -> dict[str, Samples]:
    """Per depth: a few warm-up calls, then up to `requests` samples or `budget_s` seconds (at least `minimum`)."""
    results = {}
    for depth in depths:
        for _ in range(min(warmup, 5)):
            fetch(depth)
        samples = Samples()
        started = time.monotonic()
        while samples.n < requests and (samples.n < minimum or time.monotonic() - started < budget_s):
            elapsed, _ = timed(fetch, depth)
            samples.values_ms.append(elapsed)
        results[depth.label] = samples
        log(f"  OFFSET {depth.skip:>9,}: n={samples.n:4d} p50={samples.p50:8.2f} ms p99={samples.p99:8.2f} ms")
    return results


# ---------------------------------------------------------------------------
# Machine and report


def machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1).strip() if match else cpu
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip() or str(os.cpu_count())
    return {
        "nproc": nproc,
        "cpu": cpu,
        "memory": f"{total_kib / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def fmt(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def write_plot(path: Path, orders: int, depths: list[Depth], series: dict[str, dict[str, Samples]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [depth.skip / 1000 for depth in depths]
    styles = {
        "keyset via HTTP": ("tab:blue", "o"),
        "keyset SQL": ("tab:green", "s"),
        "keyset SQL, one statement": ("tab:purple", "D"),
        "OFFSET SQL": ("tab:red", "^"),
    }
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    for name, results in series.items():
        colour, marker = styles[name]
        p50 = [results[depth.label].p50 for depth in depths]
        p99 = [results[depth.label].p99 for depth in depths]
        axis.plot(x, p50, color=colour, marker=marker, label=f"{name} p50")
        axis.plot(x, p99, color=colour, marker=marker, linestyle="--", alpha=0.6, label=f"{name} p99")
    axis.set_yscale("log")
    axis.set_xlabel("page depth (thousands of newer orders skipped)")
    axis.set_ylabel("latency per page (ms, log scale)")
    axis.set_title(f"Page of {PAGE_SIZE} by depth, {orders:,} orders: keyset vs OFFSET")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, ncol=3, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def write_doc(path: Path, section: str) -> None:
    block = f"{SECTION_START}\n{section.rstrip()}\n{SECTION_END}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        text = path.read_text()
        if SECTION_START in text and SECTION_END in text:
            before, rest = text.split(SECTION_START, 1)
            _, after = rest.split(SECTION_END, 1)
            path.write_text(before + block + after.lstrip("\n"))
        else:
            path.write_text(text.rstrip() + "\n\n" + block)
    else:
        path.write_text(
            "# Benchmarks\n\nFigures written by the scripts in `bench/`; rerun them to refresh.\n\n" + block
        )


def report(
    *,
    args: argparse.Namespace,
    info: dict[str, str],
    pg_version: str,
    service: str,
    load_s: float,
    depths: list[Depth],
    key: list[Depth],
    series: dict[str, dict[str, Samples]],
    healthz: Samples,
    load_average: tuple[tuple[float, float, float], tuple[float, float, float]],
    buffers: dict[str, dict[str, int]],
    plot_path: Path,
    doc_path: Path,
    elapsed_s: float,
) -> tuple[str, bool, float]:
    http = series["keyset via HTTP"]
    first, last = key[0].label, key[-1].label
    ratio = http[last].p99 / http[first].p99
    met = ratio <= GOAL_RATIO
    sql_ratio = series["keyset SQL"][last].p99 / series["keyset SQL"][first].p99
    one_ratio = series["keyset SQL, one statement"][last].p99 / series["keyset SQL, one statement"][first].p99
    offset_ratio = series["OFFSET SQL"][last].p99 / series["OFFSET SQL"][first].p99
    # Every page but the first runs two statements (reference -> sequence, then the page):
    # the second page is the like-for-like baseline for "does depth cost anything".
    second_ratio = http[last].p99 / http["second"].p99
    second_p50_ratio = http[last].p50 / http["second"].p50
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    lines = [
        "## Paging depth",
        "",
        (
            f"`bench/run.sh{' --quick' if args.quick else ''}` (`bench/paging.py`), {now}. "
            f"{args.orders:,} orders in `buy_order_view`, pages of {PAGE_SIZE}."
        ),
        "",
        (
            f"**Goal: last-page p99 within 10% of the first page's (via HTTP). "
            f"{'Met' if met else 'Not met'}: last/first p99 = {ratio:.2f}** "
            f"(keyset SQL alone: {sql_ratio:.2f}; keyset SQL in one statement: {one_ratio:.2f}; "
            f"OFFSET SQL: {offset_ratio:.0f})."
        ),
        "",
        (
            "The first page runs one statement, every other page two (the reference's sequence, then the page), "
            "so the first page is structurally a little cheaper. Like for like, last page against second page "
            f"via HTTP: p99 ratio {second_ratio:.2f}, p50 ratio {second_p50_ratio:.2f}."
        ),
        "",
        (
            "Machine: "
            f"{info['nproc']} CPUs (`nproc`; {info['cpu']}), {info['memory']} memory, "
            f"PostgreSQL {pg_version}, Python {info['python']}, Linux {info['kernel']}. "
            "Postgres, the service and the benchmark client share the machine "
            f"(1-minute load average {load_average[0][0]:.2f} at the start, {load_average[1][0]:.2f} at the end)."
        ),
        "",
        (
            f"Service: the real `fetch_buy_orders` ({service}), on 127.0.0.1, one keep-alive "
            f"`httpx.Client`, sequential requests. Load: `INSERT ... SELECT generate_series` + "
            f"`VACUUM ANALYZE` in {load_s:.0f}s."
        ),
        "",
        (
            "| page | depth (rows skipped) | keyset via HTTP p50 / p99 (ms) | keyset SQL p50 / p99 (ms) "
            "| keyset SQL, one statement p50 / p99 (ms) | OFFSET SQL p50 / p99 (ms) | buffers keyset / OFFSET |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for depth in key:
        cells = [f"{fmt(series[name][depth.label].p50)} / {fmt(series[name][depth.label].p99)}" for name in METHODS]
        buf = f"{buffers['keyset'][depth.label]:,} / {buffers['offset'][depth.label]:,}"
        lines.append(f"| {depth.label} | {depth.skip:,} | {' | '.join(cells)} | {buf} |")
    http_n = http[first].n
    offset_ns = sorted({series["OFFSET SQL"][d.label].n for d in depths})
    lines += [
        "",
        f"Samples: keyset (HTTP and SQL) {http_n} per depth after {args.warmup} warm-up rounds, interleaved "
        "round-robin across all depths; OFFSET "
        + (f"{offset_ns[0]}" if len(offset_ns) == 1 else f"{offset_ns[0]} to {offset_ns[-1]}")
        + f" per depth (at most {args.requests}, or {args.offset_budget:g}s per depth, at least "
        f"{args.offset_min}). p50/p99 interpolate between closest ranks. Buffers: shared blocks hit or read "
        "by one execution (`EXPLAIN (ANALYZE, BUFFERS)`; keyset counts both statements).",
        "",
        (
            "- *keyset via HTTP*: `GET /buy_orders?page_size=10&last_reference=<id>` (no `last_reference` for "
            "the first page), end to end through the service."
        ),
        (
            "- *keyset SQL*: the row statements of the first design (before the read model stored documents), "
            "timed with psycopg2 from the benchmark: "
            "`SELECT sequence ... WHERE id = $ref`, then `... WHERE sequence < $s ORDER BY sequence DESC LIMIT 11` "
            "(the first page is one statement, `ORDER BY sequence DESC LIMIT 11`)."
        ),
        (
            "- *keyset SQL, one statement*: the shape the service now runs, without its document aggregation "
            "(`adapters/read_model.py` adds `string_agg` of the stored documents over these rows; the *via HTTP* "
            "column times exactly what the service runs): the reference lookup and the page "
            "in one round trip, `(SELECT sequence ... WHERE id = $ref) ref LEFT JOIN LATERAL (... WHERE sequence "
            "< ref.sequence ORDER BY sequence DESC LIMIT 11) ON true` (no row: unknown reference)."
        ),
        "- *OFFSET SQL*: `... ORDER BY sequence DESC LIMIT 11 OFFSET k`, the same way.",
        (
            f"- Baseline: `GET /healthz` on the same client and service, p50 {fmt(healthz.p50)} / p99 "
            f"{fmt(healthz.p99)} ms: the HTTP and framework share of the keyset figures."
        ),
        "",
        "All depths (p50 / p99 ms):",
        "",
        "| depth | keyset via HTTP | keyset SQL | keyset SQL, one statement | OFFSET SQL |",
        "|---:|---:|---:|---:|---:|",
    ]
    for depth in depths:
        cells = [f"{fmt(series[name][depth.label].p50)} / {fmt(series[name][depth.label].p99)}" for name in METHODS]
        lines.append(f"| {depth.skip:,} | {' | '.join(cells)} |")
    relative_plot = os.path.relpath(plot_path, doc_path.parent)
    lines += [
        "",
        f"![latency against page depth, keyset vs OFFSET]({relative_plot})",
        "",
        f"Whole run: {elapsed_s:.0f}s.",
    ]
    return "\n".join(lines) + "\n", met, ratio


# ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=None, help="orders to load (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 orders and shorter budgets (< 3 min)")
    parser.add_argument("--requests", type=int, default=None, help="recorded requests per depth (1000; quick 500)")
    parser.add_argument("--warmup", type=int, default=50, help="unrecorded warm-up rounds (default 50)")
    parser.add_argument("--depths", type=int, default=11, help="evenly spaced depths for the plot (default 11)")
    parser.add_argument("--offset-budget", type=float, default=None, help="seconds per OFFSET depth (10; quick 3)")
    parser.add_argument("--offset-min", type=int, default=30, help="at least this many OFFSET samples per depth")
    parser.add_argument("--server", choices=["gunicorn", "uvicorn"], default="gunicorn")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2, as production)")
    parser.add_argument("--pg-url", default=os.environ.get("TEST_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "paging_depth.png")
    parser.add_argument("--no-write", action="store_true", help="print the figures, write no files")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    args = parser.parse_args()
    if args.orders is None:
        args.orders = 100_000 if args.quick else 1_000_000
    if args.requests is None:
        args.requests = 500 if args.quick else 1000
    if args.offset_budget is None:
        args.offset_budget = 3.0 if args.quick else 10.0
    if args.orders < 100 * PAGE_SIZE:
        parser.error(f"--orders must be at least {100 * PAGE_SIZE}")
    if args.depths < 3:
        parser.error("--depths must be at least 3")
    return args


def choose_depths(orders: int, count: int) -> tuple[list[Depth], list[Depth]]:
    """`count` evenly spaced depths from the first page to the last, plus the middle page."""
    last_skip = orders - PAGE_SIZE
    middle_skip = orders // 2
    skips = sorted({min(round(orders * i / (count - 1)), last_skip) for i in range(count)} | {middle_skip})
    skips = sorted(set(skips) | {PAGE_SIZE})
    labels = {0: "first", PAGE_SIZE: "second", middle_skip: "middle", last_skip: "last"}
    depths = [Depth(labels.get(skip, f"depth {skip}"), skip, None) for skip in skips]
    return depths, [d for d in depths if d.skip in labels]


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    load_before = os.getloadavg()
    require_loopback(args.pg_url)
    dbname = f"bench_paging_{os.getpid()}_{secrets.token_hex(3)}"
    db_url = with_database(args.pg_url, dbname)
    db_sqlalchemy_url = sqlalchemy_url(db_url)

    # SIGTERM/SIGINT: unwind through the finally blocks (service stopped, database dropped).
    def interrupted(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)

    log(f"creating database {dbname}")
    create_database(args.pg_url, dbname)
    service: Service | None = None
    try:
        from btc_orders.services.migration.__main__ import migrate

        migrate("read_model", db_sqlalchemy_url)
        log(f"loading {args.orders:,} orders")
        load_s = load_orders(db_url, args.orders)
        log(f"loaded and vacuumed in {load_s:.1f}s")

        depths, _ = choose_depths(args.orders, args.depths)
        connection = psycopg2.connect(db_url, application_name="bench_paging")
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0].split()[0]
        # The reference of a page `skip` rows deep is the id of sequence N - skip + 1.
        refs = ids_by_sequence(cursor, [args.orders - d.skip + 1 for d in depths if d.skip > 0])
        depths = [Depth(d.label, d.skip, refs.get(args.orders - d.skip + 1)) for d in depths]
        key = [d for d in depths if d.label in {"first", "second", "middle", "last"}]

        service = start_service(db_sqlalchemy_url, args.server, args.workers)
        client = httpx.Client(base_url=service.base_url, trust_env=False, timeout=30)

        # Sanity: the three methods return the same page, the one expected by sequence.
        for depth in depths:
            expected_top = args.orders - depth.skip
            via_http = http_page(client, depth)
            via_keyset = keyset_sql_page(cursor, depth)
            via_offset = offset_sql_page(cursor, depth)
            via_one = one_statement_page(cursor, depth)
            if not (via_http == via_keyset == via_offset == via_one) or len(via_http) != PAGE_SIZE:
                raise SystemExit(f"pages differ at depth {depth.skip}: {via_http} / {via_keyset} / {via_offset}")
            cursor.execute("SELECT sequence FROM buy_order_view WHERE id = %s", (via_http[0],))
            if cursor.fetchone()[0] != expected_top:
                raise SystemExit(f"page at depth {depth.skip} does not start at sequence {expected_top}")
        last_body = client.get("/buy_orders", params={"page_size": PAGE_SIZE, "last_reference": key[-1].reference})
        if last_body.json()["has_more"] is not False:
            raise SystemExit("the last page says has_more")

        buffers: dict[str, dict[str, int]] = {"keyset": {}, "offset": {}}
        for depth in depths:
            if depth.reference is None:
                keyset_buffers = buffers_touched(cursor, SQL_FIRST_PAGE, (PAGE_SIZE + 1,))
            else:
                cursor.execute(SQL_SEQUENCE_OF, (depth.reference,))
                after = cursor.fetchone()[0]
                keyset_buffers = buffers_touched(cursor, SQL_SEQUENCE_OF, (depth.reference,)) + buffers_touched(
                    cursor, SQL_PAGE_AFTER, (after, PAGE_SIZE + 1)
                )
            buffers["keyset"][depth.label] = keyset_buffers
            buffers["offset"][depth.label] = buffers_touched(cursor, SQL_OFFSET, (PAGE_SIZE + 1, depth.skip))

        log(f"keyset via HTTP: {len(depths)} depths x ({args.warmup} + {args.requests}) requests, interleaved")
        series: dict[str, dict[str, Samples]] = {}
        series["keyset via HTTP"] = interleaved(depths, lambda d: http_page(client, d), args.warmup, args.requests)
        log("filtered pages and the newer direction via HTTP, interleaved")
        cases, ratios = filtered_cases(cursor, args.orders)
        for case in cases:
            if tuple(case_page(client, case)) != case.expected:
                raise SystemExit(f"{case.label}: the service's page differs from plain SQL's")
        filtered: dict[str, Samples] = {case.label: Samples() for case in cases}
        for round_number in range(args.warmup + args.requests):
            for case in cases:
                elapsed, _ = timed(case_page, client, case)
                if round_number >= args.warmup:
                    filtered[case.label].values_ms.append(elapsed)
        log("GET /healthz baseline (HTTP and framework cost without the read model)")
        healthz = Samples()
        for number in range(args.warmup + args.requests):
            elapsed, response = timed(client.get, "/healthz")
            response.raise_for_status()
            if number >= args.warmup:
                healthz.values_ms.append(elapsed)
        log("keyset SQL, interleaved")
        series["keyset SQL"] = interleaved(depths, lambda d: keyset_sql_page(cursor, d), args.warmup, args.requests)
        log("keyset SQL in one statement, interleaved")
        series["keyset SQL, one statement"] = interleaved(
            depths, lambda d: one_statement_page(cursor, d), args.warmup, args.requests
        )
        log(f"OFFSET SQL: up to {args.requests} per depth or {args.offset_budget:g}s")
        series["OFFSET SQL"] = budgeted(
            depths,
            lambda d: offset_sql_page(cursor, d),
            args.warmup,
            args.requests,
            args.offset_budget,
            args.offset_min,
        )
        client.close()
        connection.close()

        section, met, ratio = report(
            args=args,
            info=machine(),
            pg_version=pg_version,
            service=service.description,
            load_s=load_s,
            depths=depths,
            key=key,
            series=series,
            healthz=healthz,
            load_average=(load_before, os.getloadavg()),
            buffers=buffers,
            plot_path=args.plot,
            doc_path=args.doc,
            elapsed_s=time.monotonic() - started,
        )
        filtered_section, filtered_met = filtered_report(cases, ratios, filtered)
        section = section.rstrip("\n") + "\n" + filtered_section
        print(section)
        if not args.no_write:
            write_plot(args.plot, args.orders, depths, series)
            write_doc(args.doc, section)
            log(f"wrote {args.doc} and {args.plot}")
        log(f"goal (last-page p99 <= 1.10 x first-page p99, via HTTP): {'met' if met else 'NOT met'} ({ratio:.2f})")
        log(f"filtered goals (every ratio <= 1.10): {'met' if filtered_met else 'NOT all met'}")
        return 0
    finally:
        if service is not None:
            service.stop()
        if args.keep_db:
            log(f"kept database {dbname}")
        else:
            drop_database(args.pg_url, dbname)
            log(f"dropped database {dbname}")


if __name__ == "__main__":
    sys.exit(main())
