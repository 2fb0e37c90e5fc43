"""Paging-depth benchmark: keyset paging through the real fetch_buy_orders vs `OFFSET`.

What it does, all against 127.0.0.1 only (one function per phase below):

1. creates a throwaway read-model database on the local Postgres and migrates it
   with the project's own migration code;
2. loads N orders into `buy_order_view` in SQL (`INSERT ... SELECT generate_series`),
   then `VACUUM ANALYZE`;
3. starts the real fetch_buy_orders service (gunicorn, 2 uvicorn workers, as in
   production; `--server uvicorn` for the single-process entry point);
4. checks that every method returns the same pages, then measures p50/p99 latency, at
   several page depths, of
   - keyset via HTTP: `GET /buy_orders?page_size=10&last_reference=<id>` (the service
     answers every page with one statement),
   - keyset SQL: the two statements of the first design (id -> sequence, then
     `WHERE sequence < $s ORDER BY sequence DESC LIMIT 11`), timed with psycopg2,
   - keyset SQL, one statement: the lookup and the page in one round trip (the service's
     shape without its document aggregation),
   - OFFSET SQL: `ORDER BY sequence DESC LIMIT 11 OFFSET k`, timed with psycopg2;
   keyset requests are interleaved round-robin across depths so that machine
   noise falls on every depth alike; then filtered pages and the newer direction;
5. writes the "Paging depth" section of docs/benchmarks.md (bench/templates/paging.md,
   benchkit/paging_report.py) and docs/img/paging_depth.png;
6. stops the service and drops the database, whatever happened.

Usage: bench/run.sh [--quick] [--orders N] [--requests N] ...  (see --help)
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from benchkit import REPO, log, pg
from benchkit.docs import write_section
from benchkit.machine import machine
from benchkit.paging_cases import Case, budgeted, case_page, filtered_cases, http_page, interleaved, timed
from benchkit.paging_report import report, write_plot
from benchkit.paging_sql import (
    PAGE_SIZE,
    SQL_FIRST_PAGE,
    SQL_OFFSET,
    SQL_PAGE_AFTER,
    SQL_SEQUENCE_OF,
    Depth,
    buffers_touched,
    choose_depths,
    ids_by_sequence,
    keyset_sql_page,
    load_orders,
    offset_sql_page,
    one_statement_page,
)
from benchkit.services import Proc, Processes, free_port
from benchkit.stats import Samples

SECTION_START = "<!-- paging-depth:start (written by bench/paging.py) -->"
SECTION_END = "<!-- paging-depth:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument("--pg-url", default=pg.PG_ADMIN)
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "paging_depth.png")
    parser.add_argument("--no-write", action="store_true", help="print the figures, write no files")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    args = parser.parse_args(argv)
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


def start_fetch(procs: Processes, read_url: str, server: str, workers: int) -> Proc:
    """fetch_buy_orders on a free port: gunicorn with `workers` uvicorn workers, or one uvicorn process."""
    if server == "uvicorn":
        proc = procs.module("fetch_buy_orders", {"READ_MODEL_DB_URL": read_url}, port=free_port())
    else:
        port = free_port()
        command = [
            sys.executable, "-m", "gunicorn", "btc_orders.asgi:fetch_buy_orders()",
            "-k", "uvicorn.workers.UvicornWorker", "-w", str(workers), "-b", f"127.0.0.1:{port}",
        ]  # fmt: skip
        env = {"READ_MODEL_DB_URL": read_url, "FETCH_BUY_ORDERS_PORT": str(port)}
        proc = procs.start("fetch_buy_orders", command, env, url=f"http://127.0.0.1:{port}")
        proc.description = f"gunicorn, {workers} uvicorn workers"
    log(f"fetch_buy_orders up on {proc.url} ({proc.description})")
    return proc


def check_pages(client: httpx.Client, cursor: Any, orders: int, depths: list[Depth], key: list[Depth]) -> None:
    """Every method returns the same page at every depth, the one expected by sequence; the last has no more."""
    for depth in depths:
        expected_top = orders - depth.skip
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


def measure_buffers(cursor: Any, depths: list[Depth]) -> dict[str, dict[str, int]]:
    """Shared buffers per depth: keyset (the first design's two statements) and OFFSET."""
    buffers: dict[str, dict[str, int]] = {"keyset": {}, "offset": {}}
    for depth in depths:
        if depth.reference is None:
            keyset = buffers_touched(cursor, SQL_FIRST_PAGE, (PAGE_SIZE + 1,))
        else:
            cursor.execute(SQL_SEQUENCE_OF, (depth.reference,))
            after = cursor.fetchone()[0]
            keyset = buffers_touched(cursor, SQL_SEQUENCE_OF, (depth.reference,))
            keyset += buffers_touched(cursor, SQL_PAGE_AFTER, (after, PAGE_SIZE + 1))
        buffers["keyset"][depth.label] = keyset
        buffers["offset"][depth.label] = buffers_touched(cursor, SQL_OFFSET, (PAGE_SIZE + 1, depth.skip))
    return buffers


def measure_filtered(
    client: httpx.Client, cursor: Any, args: argparse.Namespace
) -> tuple[list[Case], list[tuple[str, str, str]], dict[str, Samples]]:
    """Filtered pages and the newer direction via HTTP, each checked against SQL first, interleaved."""
    cases, ratios = filtered_cases(cursor, args.orders)
    for case in cases:
        if tuple(case_page(client, case)) != case.expected:
            raise SystemExit(f"{case.label}: the service's page differs from plain SQL's")
    samples = {case.label: Samples() for case in cases}
    for round_number in range(args.warmup + args.requests):
        for case in cases:
            elapsed, _ = timed(case_page, client, case)
            if round_number >= args.warmup:
                samples[case.label].values_ms.append(elapsed)
    return cases, ratios, samples


def measure_healthz(client: httpx.Client, args: argparse.Namespace) -> Samples:
    """GET /healthz: the HTTP and framework cost without the read model."""
    healthz = Samples()
    for number in range(args.warmup + args.requests):
        elapsed, response = timed(client.get, "/healthz")
        response.raise_for_status()
        if number >= args.warmup:
            healthz.values_ms.append(elapsed)
    return healthz


def measure_http_depths(client: httpx.Client, depths: list[Depth], args: argparse.Namespace) -> dict[str, Samples]:
    log(f"keyset via HTTP: {len(depths)} depths x ({args.warmup} + {args.requests}) requests, interleaved")
    return interleaved(depths, lambda d: http_page(client, d), args.warmup, args.requests)


def measure_sql_depths(cursor: Any, depths: list[Depth], args: argparse.Namespace) -> dict[str, dict[str, Samples]]:
    """The SQL methods at every depth: keyset ones interleaved, OFFSET within a time budget per depth."""
    log("keyset SQL, then keyset SQL in one statement, interleaved")
    series = {
        "keyset SQL": interleaved(depths, lambda d: keyset_sql_page(cursor, d), args.warmup, args.requests),
        "keyset SQL, one statement": interleaved(
            depths, lambda d: one_statement_page(cursor, d), args.warmup, args.requests
        ),
    }
    log(f"OFFSET SQL: up to {args.requests} per depth or {args.offset_budget:g}s")
    series["OFFSET SQL"] = budgeted(
        depths, lambda d: offset_sql_page(cursor, d), args.warmup, args.requests, args.offset_budget, args.offset_min
    )
    return series


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    load_before = os.getloadavg()
    pg.require_loopback(args.pg_url)
    dbname = f"bench_paging_{os.getpid()}_{secrets.token_hex(3)}"
    db_url = pg.with_database(args.pg_url, dbname)

    def interrupted(signum: int, _frame: Any) -> None:  # unwind through the finally blocks
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    log(f"creating database {dbname}")
    pg.create_database(dbname, args.pg_url)
    procs = Processes()
    try:
        from btc_orders.services.migration.__main__ import migrate

        migrate("read_model", pg.sqlalchemy_url(db_url))
        log(f"loading {args.orders:,} orders")
        load_s = load_orders(db_url, args.orders)
        log(f"loaded and vacuumed in {load_s:.1f}s")
        connection = psycopg2.connect(db_url, application_name="bench_paging")
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute("SHOW server_version")
        info = {**machine(), "postgres": cursor.fetchone()[0].split()[0]}
        depths, _ = choose_depths(args.orders, args.depths)
        # The reference of a page `skip` rows deep is the id of sequence N - skip + 1.
        refs = ids_by_sequence(cursor, [args.orders - d.skip + 1 for d in depths if d.skip > 0])
        depths = [Depth(d.label, d.skip, refs.get(args.orders - d.skip + 1)) for d in depths]
        key = [d for d in depths if d.label in {"first", "second", "middle", "last"}]
        service = start_fetch(procs, pg.sqlalchemy_url(db_url), args.server, args.workers)
        with httpx.Client(base_url=service.url or "", trust_env=False, timeout=30) as client:
            check_pages(client, cursor, args.orders, depths, key)
            buffers = measure_buffers(cursor, depths)
            series = {"keyset via HTTP": measure_http_depths(client, depths, args)}
            log("filtered pages and the newer direction via HTTP, interleaved")
            filtered = measure_filtered(client, cursor, args)
            log("GET /healthz baseline")
            healthz = measure_healthz(client, args)
            series.update(measure_sql_depths(cursor, depths, args))
        connection.close()
        measured = {
            "info": info, "service": service.description, "load_s": load_s, "depths": depths, "key": key,
            "series": series, "healthz": healthz, "buffers": buffers,
            "load_average": (load_before, os.getloadavg()), "elapsed_s": time.monotonic() - started,
        }  # fmt: skip
        section, met, filtered_met, ratio = report(args, measured, filtered)
        print(section)
        if not args.no_write:
            write_plot(args.plot, args.orders, depths, series)
            write_section(args.doc, SECTION_START, SECTION_END, section)
            log(f"wrote {args.doc} and {args.plot}")
        log(f"goal (last-page p99 <= 1.10 x first-page p99, via HTTP): {'met' if met else 'NOT met'} ({ratio:.2f})")
        log(f"filtered goals (every ratio <= 1.10): {'met' if filtered_met else 'NOT all met'}")
        return 0
    finally:
        procs.stop_all()
        if args.keep_db:
            log(f"kept database {dbname}")
        else:
            pg.drop_database(dbname, args.pg_url)
            log(f"dropped database {dbname}")


if __name__ == "__main__":
    sys.exit(main())
