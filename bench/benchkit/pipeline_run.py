"""The run of bench/pipeline.py: the whole suite of the tree under test started as production starts
it, then one step of open-loop load per rate until an SLO breaks, with naive pgbench before and after.

Every process gets the tree's `.env` settings except what the run sets itself (URLs, ports,
`BTC_CAP`, Fluentd off), with `LOG_LEVEL=INFO`: create_buy_order and fetch_buy_orders under gunicorn
with the tree's docker/gunicorn.conf.py and `--workers` uvicorn workers, btc_price under the same
configuration (which pins it to one worker), outbox_relay and read_model_sync as `python -m`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import time
from typing import Any

from benchkit import log, pg
from benchkit.cpu import snapshot, used
from benchkit.load import pgbench
from benchkit.machine import commit, machine
from benchkit.openloop import run_open_loop
from benchkit.services import Proc, Processes, Tree, free_port
from benchkit.stats import pct
from benchkit.stores import amqp_url, stores
from tests.support.fake_coinbase import FakeCoinbase

OWN = r"_URL$|_PORT$|^FLUENTD_HOST$|^BTC_CAP$|^PUBLISH_ADDRESS$|^GATEWAY_"  # set by the run, not .env
LOG_LEVEL = "INFO"
BTC_CAP = "21000000"
SLO_PUT_P99_MS, SLO_LAG_P99_MS = 50.0, 100.0
NAIVE_CLIENTS = 32
DRAIN_TIMEOUT_S = 15.0
WORKERS = ("outbox_relay", "OUTBOX_RELAY_METRICS_PORT"), ("read_model_sync", "READ_MODEL_SYNC_METRICS_PORT")


def count(url: str, table: str, first: int) -> int:
    return int(pg.scalar(url, f"SELECT count(*) FROM {table} WHERE sequence > %s", (first,)))


def epochs(url: str, column: str, table: str, first: int) -> list[tuple[Any, ...]]:
    """(sequence, `column` as seconds since the epoch) of the rows after sequence `first`."""
    return pg.execute(url, f"SELECT sequence, extract(epoch from {column}) FROM {table} WHERE sequence > %s", (first,))


def step(rate: float, seconds: float, create: Proc, groups: dict[int, str], write: str, read: str) -> dict[str, Any]:
    """One rate: the load, then the drain until every order is projected (or DRAIN_TIMEOUT_S), CPU over both."""
    first = int(pg.scalar(write, "SELECT coalesce(max(sequence), 0) FROM buy_order"))
    databases = (write.rsplit("/", 1)[1], read.rsplit("/", 1)[1])
    before, generator_before, wall = snapshot(groups, databases), time.process_time(), time.monotonic()
    assert create.url
    load = run_open_loop(create.url, rate, seconds)
    generator = time.process_time() - generator_before
    stored = count(write, "buy_order", first)  # sequences may skip: the stored count, not max - first
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while count(read, "buy_order_view", first) < stored and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu = used(before, snapshot(groups, databases))
    wall = time.monotonic() - wall
    created = epochs(write, "created_at", "buy_order", first)
    applied = dict(epochs(read, "applied_at", "buy_order_view", first))
    lag = [(float(applied[s]) - float(c)) * 1000 for s, c in created if s in applied]
    orders = len(created)
    answered = {**{str(status): n for status, n in load.statuses.items()}, **load.failures}
    errors = sum(n for status, n in answered.items() if status != "201")
    latency = load.put_latency_ms
    result: dict[str, Any] = {
        "rate": rate, "achieved": load.statuses.get(201, 0) / max(load.elapsed, 1e-9),
        "orders": orders, "statuses": answered, "errors": errors, "late_starts": load.late_starts,
        "put_p50": pct(latency, 50), "put_p99": pct(latency, 99), "put_max": max(latency, default=0),
        "lag_p50": pct(lag, 50), "lag_p99": pct(lag, 99), "lag_max": max(lag, default=0),
        "unprojected": orders - len(lag),
        "cpu_ms_per_order": {g: 1000 * s / max(orders, 1) for g, s in cpu.items()},
        "cores": {g: s / wall for g, s in cpu.items()},
        "generator_ms_per_order": 1000 * generator / max(orders, 1),
    }  # fmt: skip
    result["holds"] = bool(
        errors == 0
        and result["unprojected"] == 0
        and result["put_p99"] <= SLO_PUT_P99_MS
        and result["lag_p99"] <= SLO_LAG_P99_MS
    )
    log(
        f"{rate:.0f}/s: {orders} orders, PUT p50 {result['put_p50']:.1f} p99 {result['put_p99']:.1f} ms, "
        f"lag p50 {result['lag_p50']:.1f} p99 {result['lag_p99']:.1f} ms, errors {errors}, "
        f"unprojected {result['unprojected']}, CPU {sum(result['cpu_ms_per_order'].values()):.2f} ms/order "
        f"(generator {result['generator_ms_per_order']:.2f}): {'holds' if result['holds'] else 'BREAKS'}"
    )
    return result


def start_suite(procs: Processes, env: dict[str, str], workers: int) -> Proc:
    """Every process of the suite, as production starts it; returns create_buy_order."""
    btc_price = procs.gunicorn("btc_price", 1, env)
    assert btc_price.url
    env = {**env, "BTC_PRICE_URL": btc_price.url}
    create = procs.gunicorn("create_buy_order", workers, env)
    procs.gunicorn("fetch_buy_orders", workers, env)
    for name, port_var in WORKERS:
        procs.module(name, {**env, port_var: str(free_port())})
    time.sleep(1)
    for proc in procs.running:
        if not proc.running():
            raise SystemExit(f"{proc.name} exited:\n{proc.launched.logs(4000)}")
    return create


def run(args: argparse.Namespace, rates: list[float]) -> dict[str, Any]:
    """The measurement: its results as `--json` writes them (benchkit.pipeline_report prints them)."""
    tree = Tree.at(args.src, args.python)
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    write_db, read_db, vhost = f"bench_pw_{tag}", f"bench_pr_{tag}", f"bench_p_{tag}"
    write, read = pg.db_url(write_db), pg.db_url(read_db)
    results: dict[str, Any] = {
        "machine": machine(), "note": args.note, "args": {k: str(v) for k, v in vars(args).items()},
        "tree": f"{tree.root} at {commit(tree.root)}", "python": tree.python,
    }  # fmt: skip
    log(f"tree {results['tree']}, interpreter {tree.python}")
    procs = Processes(tree)
    with stores(tree, write_db, read_db, vhost):
        coinbase = FakeCoinbase().start()
        try:
            results["naive_before"] = pgbench(write, "naive.sql", NAIVE_CLIENTS, args.pgbench_seconds).tps
            pg.execute(write, "VACUUM ANALYZE")
            env = tree.dotenv(OWN) | {
                "LOG_LEVEL": LOG_LEVEL, "FLUENTD_HOST": "", "COINBASE_API_URL": coinbase.url, "BTC_CAP": BTC_CAP,
                "WRITE_MODEL_DB_URL": write, "READ_MODEL_DB_URL": read, "AMQP_URL": amqp_url(vhost),
            }  # fmt: skip
            create = start_suite(procs, env, args.workers or int(env.get("WEB_CONCURRENCY", "2")))
            results["workers"] = args.workers or int(env.get("WEB_CONCURRENCY", "2"))
            groups = {proc.pid: proc.name for proc in procs.running}
            assert create.url
            log(f"warm-up: {rates[0]:.0f}/s for 3 s")
            run_open_loop(create.url, rates[0], 3)
            time.sleep(1)
            results["steps"] = []
            for rate in rates:
                results["steps"].append(step(rate, args.seconds, create, groups, write, read))
                if not results["steps"][-1]["holds"] and not args.all:
                    break
                time.sleep(1)
            procs.stop_all()
            results["naive_after"] = pgbench(write, "naive.sql", NAIVE_CLIENTS, args.pgbench_seconds).tps
        finally:
            with contextlib.suppress(Exception):
                procs.stop_all()
            coinbase.stop()
    results["machine"]["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return results
