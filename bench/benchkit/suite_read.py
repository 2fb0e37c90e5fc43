"""bench/suite.py's phases on the event and read side, one function each, in the order the suite runs
them: read_model_sync drain, outbox_relay drain, projection lag, GET /buy_orders against the trivial
endpoint, paging depth (bench/paging.py). Each adds its figures to `run.results`."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import psycopg2

from benchkit import BENCH, log, pg
from benchkit.load import wrk
from benchkit.openloop import log_open_loop, run_open_loop
from benchkit.profiling import profile
from benchkit.suite_run import DRAIN_BASE_SEQUENCE, Run, coinbase_stats


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


def sync_drain(run: Run) -> None:
    """Fill the queue with the worker stopped, then start read_model_sync and time the drain."""
    count = run.args.drain_events
    log(f"publishing {count:,} events")
    publish_s = publish_events(run.amqp_url, count, DRAIN_BASE_SEQUENCE)
    log(f"published in {publish_s:.1f}s")
    env = {"READ_MODEL_DB_URL": run.read_url(True), "AMQP_URL": run.amqp_url, "READ_MODEL_SYNC_METRICS_PORT": "0"}
    t0 = time.monotonic()
    run.sync = run.procs.module("read_model_sync", env)
    series: list[tuple[float, int]] = []
    connection = psycopg2.connect(run.read_url())
    connection.autocommit = True
    cursor = connection.cursor()
    first_seen = None
    while True:
        cursor.execute("SELECT count(*) FROM buy_order_view WHERE sequence >= %s", (DRAIN_BASE_SEQUENCE,))
        n = int(cursor.fetchone()[0])
        now = time.monotonic() - t0
        series.append((now, n))
        if n and first_seen is None:
            first_seen = now
        if n >= count:
            break
        if not run.sync.running():
            raise SystemExit(f"read_model_sync exited:\n{run.sync.log_text}")
        time.sleep(0.1)
    connection.close()
    wall = series[-1][0]
    run.results["drain_series"] = series
    run.results["drain_events"] = count
    run.results["drain"] = {
        "wall": wall,
        "first_seen": first_seen or 0,
        "rate_wall": count / wall,
        "rate_applying": count / max(1e-6, wall - (first_seen or 0)),
        "publish_s": publish_s,
    }
    log(f"drain: {run.results['drain']}")


def relay_drain(run: Run) -> None:
    """The newest unsent outbox rows of the PUT runs (the rest, and pgbench's rows, marked sent), relayed
    with read_model_sync running; then the worker is let project them before the lag run."""
    url = run.write_url()
    pg.execute(
        url,
        "UPDATE outbox SET sent_at = now() WHERE sent_at IS NULL AND (request_id = 'pgbench' "
        "OR id <= (SELECT max(id) FROM outbox WHERE request_id IS DISTINCT FROM 'pgbench') - %s)",
        (run.args.relay_backlog,),
    )
    unsent = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
    backlog = pg.scalar(url, unsent)
    t0 = time.monotonic()
    env = {"WRITE_MODEL_DB_URL": run.write_url(True), "AMQP_URL": run.amqp_url, "OUTBOX_RELAY_METRICS_PORT": "0"}
    run.relay = run.procs.module("outbox_relay", env)
    series: list[tuple[float, int]] = []
    while True:
        left = pg.scalar(url, unsent)
        series.append((time.monotonic() - t0, backlog - left))
        if left == 0 or time.monotonic() - t0 > 180:
            break
        if not run.relay.running():
            raise SystemExit(f"outbox_relay exited:\n{run.relay.log_text}")
        time.sleep(0.2)
    first = next((t for t, n in series if n > 0), 0.0)
    wall, sent = series[-1]
    run.results["relay"] = {
        "backlog": backlog, "sent": sent, "wall": wall, "first": first,
        "rate_wall": sent / wall, "rate_sending": sent / max(1e-6, wall - first),
    }  # fmt: skip
    log(f"relay drain: {run.results['relay']}")
    projected = "SELECT count(*) FROM buy_order_view WHERE sequence < %s"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and pg.scalar(run.read_url(), projected, (DRAIN_BASE_SEQUENCE,)) < sent:
        time.sleep(0.2)


def projection_lag(run: Run) -> None:
    """Open loop at half the max rate with the relay and the worker running: sampled orders polled through
    fetch_buy_orders from their 201, and every order from the databases' own timestamps."""
    assert run.create and run.create.url
    # fetch serves only the lag probes here (about 10 GETs a second): a small pool keeps every process
    # of the run within the local Postgres's max_connections.
    run.fetch = run.procs.gunicorn(
        "fetch_buy_orders", 2, {"READ_MODEL_DB_URL": run.read_url(True), "DB_POOL_SIZE": "5"}
    )
    time.sleep(1)
    half = run.results["half_rate"]
    seconds = run.args.seconds * 2 if run.args.quick else 45
    first_seq = pg.scalar(run.write_url(), "SELECT coalesce(max(sequence), 0) FROM buy_order")
    t0_wall = time.time()
    log(f"projection lag: open loop at {half:.0f}/s for {seconds:.0f}s")
    lag_run = run.results["lag_run"] = run_open_loop(run.create.url, half, seconds, fetch_url=run.fetch.url)
    log_open_loop("lag run", lag_run)
    time.sleep(2)
    created = (
        pg.execute(
            run.write_url(),
            "SELECT sequence, extract(epoch from created_at) FROM buy_order "
            "WHERE sequence > %s AND request_id IS DISTINCT FROM 'pgbench'",
            (first_seq,),
        )
        or []
    )
    applied = dict(
        pg.execute(
            run.read_url(),
            "SELECT sequence, extract(epoch from applied_at) FROM buy_order_view WHERE sequence > %s AND sequence < %s",
            (first_seq, DRAIN_BASE_SEQUENCE),
        )
        or []
    )
    db_lag = [(float(c) - t0_wall, (float(applied[s]) - float(c)) * 1000) for s, c in created if s in applied]
    run.results["db_lag"] = db_lag
    run.results["db_lag_missing"] = sum(1 for s, _ in created if s not in applied)
    run.results["lag_samples"] = lag_run.lag
    run.results["latency_series"] = {
        "PUT /buy_order (relay and worker stopped)": run.results["latency"].put_latency_ms,
        "PUT /buy_order (relay and worker running)": lag_run.put_latency_ms,
        "projection lag, sampled via HTTP": [v for _, v in lag_run.lag],
        "projection lag, every order (DB timestamps)": [v for _, v in db_lag],
    }
    for proc in (run.relay, run.sync, run.create):
        if proc:
            run.procs.stop(proc)


def get_vs_trivial(run: Run) -> None:
    """GET /buy_orders (page_size 10 and 100) and /healthz against the trivial /ping, 2 workers each, then
    a py-spy profile of the read path; btc_price stopped, Coinbase's calls of the whole run counted."""
    assert run.fetch and run.fetch.url
    fetch_url, seconds = run.fetch.url, run.args.seconds
    run.results["read_rows"] = pg.scalar(run.read_url(), "SELECT count(*) FROM buy_order_view")
    get = run.results["get"] = {}
    trivial = run.procs.gunicorn("fetch_buy_orders", 2, {}, app="trivial_app:app")
    for c in (8, 32):
        get[("trivial", c)] = wrk("trivial GET /ping", f"{trivial.url}/ping", c, seconds, "get.lua")
        for size in (10, 100):
            url = f"{fetch_url}/buy_orders?page_size={size}"
            get[(size, c)] = wrk(f"GET page_size={size}", url, c, seconds, "get.lua")
        get[("healthz", c)] = wrk("GET /healthz", f"{fetch_url}/healthz", c, seconds, "get.lua")
    run.results["read_profile"] = profile(run.fetch, f"{fetch_url}/buy_orders?page_size=100", "get.lua", 32, seconds)
    for proc in (trivial, run.fetch, run.btc_price):
        if proc:
            run.procs.stop(proc)
    run.results["coinbase_all"] = coinbase_stats(run.calls.stamps, 0, time.monotonic())


def paging_depth(run: Run) -> None:
    """bench/paging.py as a child process (it writes its own section of docs/benchmarks.md)."""
    remaining = run.args.limit - (time.monotonic() - run.started)
    log("paging depth: bench/paging.py")
    command = [sys.executable, str(BENCH / "paging.py"), *(["--quick"] if run.args.quick else [])]
    if run.args.no_write:
        command.append("--no-write")
    try:
        subprocess.run(command, check=True, timeout=max(300, remaining), stdout=subprocess.DEVNULL)
        run.results["paging"] = "ran"
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        run.results["paging"] = f"failed: {error}"
