"""The cost of `Prefer: wait` readers: N requests waiting at once for orders not projected yet.

Against 127.0.0.1 only: a throwaway read-model database, the real fetch_buy_orders (one uvicorn
process, `python -m btc_orders.services.fetch_buy_orders`), N concurrent
`GET /buy_orders/{id}` with `Prefer: wait=30` for ids that are not there, then the N orders
projected in one batch (as read_model_sync does: one statement, one commit, one notification per
200 ids). Reports the service's CPU while the requests wait and while it answers them, its
connections to Postgres, and the time from the commit to the last answer; and, for comparison,
the CPU of the same N reads of orders that are there already.

Usage: .venv/bin/python bench/waiters.py [--waiters 200] [--idle-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import httpx
import psycopg2

from benchkit import pg
from benchkit.cpu import group_cpu_seconds
from benchkit.services import Processes, free_port


def connections(pg_url: str, dbname: str) -> dict[str, int]:
    connection = psycopg2.connect(pg_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1", (dbname,)
            )
            return dict(cursor.fetchall())
    finally:
        connection.close()


def rows(ids: list[uuid.UUID]) -> list[dict[str, object]]:
    return [
        {
            "sequence": index + 1,
            "id": order_id,
            "created_at": datetime.now(UTC),
            "currency": "USD",
            "amount": "10.00",
            "exchange_rate": "97012.34",
            "bitcoin_amount": "0.00010308",
            "idempotence_key": uuid.uuid4(),
            "event_id": uuid.uuid4(),
        }
        for index, order_id in enumerate(ids)
    ]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="how long the waiters wait before the batch")
    parser.add_argument("--settle-seconds", type=float, default=3.0, help="time to send and register them all")
    parser.add_argument("--pg-url", default=pg.PG_ADMIN)
    args = parser.parse_args()
    pg.require_loopback(args.pg_url)
    from btc_orders.adapters import db
    from btc_orders.adapters.read_model import apply_created_events
    from btc_orders.services.migration.__main__ import migrate

    dbname = f"bench_waiters_{os.getpid()}"
    db_url = pg.with_database(args.pg_url, dbname)
    pg.create_database(dbname, args.pg_url)
    procs = Processes()
    try:
        migrate("read_model", pg.sqlalchemy_url(db_url))
        service = procs.module("fetch_buy_orders", {"READ_MODEL_DB_URL": pg.sqlalchemy_url(db_url)}, port=free_port())
        pid = service.pid  # one process, leading its own group: its CPU is the group's
        ids = [uuid.uuid4() for _ in range(args.waiters)]
        engine = db.create_engine(pg.sqlalchemy_url(db_url), 1)
        limits = httpx.Limits(max_connections=args.waiters + 10, max_keepalive_connections=args.waiters + 10)
        async with httpx.AsyncClient(base_url=service.url or "", limits=limits, timeout=60, trust_env=False) as client:
            await client.get("/healthz")
            started_cpu = group_cpu_seconds(pid)
            waiting = [
                asyncio.ensure_future(client.get(f"/buy_orders/{order_id}", headers={"Prefer": "wait=30"}))
                for order_id in ids
            ]
            await asyncio.sleep(args.settle_seconds)  # all sent, looked up once and registered
            sent_cpu = group_cpu_seconds(pid)
            await asyncio.sleep(args.idle_seconds)
            idle_cpu = group_cpu_seconds(pid)
            during = connections(args.pg_url, dbname)
            committed = time.perf_counter()
            with engine.begin() as connection:
                apply_created_events(connection, rows(ids))
            finished: list[float] = []
            for future in waiting:
                future.add_done_callback(lambda _f: finished.append(time.perf_counter() - committed))
            answers = await asyncio.gather(*waiting)
            answered = time.perf_counter() - committed
            answered_cpu = group_cpu_seconds(pid)
            assert all(answer.status_code == 200 for answer in answers), {a.status_code for a in answers}
            # the same reads once the orders are there, for comparison
            before_plain, plain_started = group_cpu_seconds(pid), time.perf_counter()
            plain = await asyncio.gather(*(client.get(f"/buy_orders/{order_id}") for order_id in ids))
            plain_s, plain_cpu = time.perf_counter() - plain_started, group_cpu_seconds(pid) - before_plain
            assert all(answer.status_code == 200 for answer in plain)
            healthz_started = time.perf_counter()
            probes = await asyncio.gather(*(client.get("/healthz") for _ in ids))
            healthz_s = time.perf_counter() - healthz_started
            assert all(answer.status_code == 200 for answer in probes)
        engine.dispose()
        print(f"waiters: {args.waiters}")
        print(f"connections to the read model while they waited: {during}")
        print(f"fetch CPU to receive them, look each up once and register it: {sent_cpu - started_cpu:.3f} s")
        print(f"fetch CPU while they waited {args.idle_seconds:g} s: {idle_cpu - sent_cpu:.3f} s")
        print(
            f"commit to the first / median / last of {args.waiters} answers: {min(finished) * 1000:.0f} / "
            f"{sorted(finished)[len(finished) // 2] * 1000:.0f} / {answered * 1000:.0f} ms"
        )
        print(f"fetch CPU to answer them: {answered_cpu - idle_cpu:.3f} s")
        print(
            f"for comparison, {args.waiters} concurrent plain reads of orders already there: {plain_s * 1000:.0f} ms, "
            f"fetch CPU {plain_cpu:.3f} s; {args.waiters} concurrent GET /healthz: {healthz_s * 1000:.0f} ms"
        )
        return 0
    finally:
        procs.stop_all()
        pg.drop_database(dbname, args.pg_url)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
