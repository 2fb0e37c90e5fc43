"""The chaos run: the suite as processes under load while faults are injected, then the invariants.

Bounded in time and traffic, loopback only, against throwaway databases and a
throwaway RabbitMQ vhost. The schedule of faults is drawn from a seed, so a run
can be repeated.
"""

import contextlib
import json
import random
import tempfile
import threading
import time
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Engine, text

from btc_orders.adapters import db, outbox
from tests.chaos import access
from tests.chaos.clients import History, create_orders, page_continuously
from tests.chaos.faults import BLACKHOLES, NEED_ORDERS_FLOWING, FaultRecord, Faults, run_faults
from tests.chaos.invariants import check
from tests.e2e.conftest import Suite
from tests.support.blackhole_proxy import BlackholeProxy
from tests.support.fake_coinbase import FakeCoinbase
from tests.support.services import throwaway_databases, wait_until

CLIENTS = 6
DRAIN_SECONDS = 90
CONVERGENCE_SECONDS = 60
TWO_ROUNDS_FROM_SECONDS = 300  # a run this long injects every fault kind at least twice


def run(
    duration: float, seed: int, directory: Path | None = None, left_out: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Run the chaos for `duration` seconds; return the report (its `problems` must be empty).

    `left_out`: fault kinds not to inject in this run (the quick run in the suite leaves out the
    blackholes, which last 20 s each).
    """
    rng = random.Random(seed)
    # About 60 orders a second of 0.0028 BTC on average: the cap is reached late in the run,
    # after the first round of faults, so that both the faults and the boundary are exercised.
    cap = Decimal(max(1, int(duration * 0.15)))
    with contextlib.ExitStack() as stack:
        folder = directory or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        role = stack.enter_context(access.service_role())  # before the databases: dropped after them
        databases = stack.enter_context(throwaway_databases())
        for name in (databases.write_name, databases.read_name):
            access.grant(name, role)
        coinbase = FakeCoinbase().start()
        stack.callback(coinbase.stop)
        suite = Suite(databases, coinbase, folder)
        stack.callback(suite.stop)
        write_url, read_url = access.as_role(databases.write_url, role), access.as_role(databases.read_url, role)
        # One relay reaches the write model, one worker the broker, through a proxy that can blackhole it.
        proxies = {
            "relay_write_model_blackholed": _proxy(write_url),
            "sync_broker_blackholed": _proxy(suite.amqp_url),
        }
        for proxy in proxies.values():
            proxy.start()
            stack.callback(proxy.stop)
        suite.env.update(
            WRITE_MODEL_DB_URL=write_url,
            READ_MODEL_DB_URL=read_url,
            BTC_CAP=str(cap),
            RATE_TTL_SECONDS="0.5",
            RATE_MAX_AGE_SECONDS="5",
            COINBASE_TIMEOUT_SECONDS="0.5",
            BTC_PRICE_TIMEOUT_SECONDS="1",
            LOG_LEVEL="WARNING",
        )
        suite.start("btc_price")
        replicas = [suite.start("create_buy_order").url for _ in range(2)]
        fetch = suite.start("fetch_buy_orders").url
        through = {
            "outbox_relay": {"WRITE_MODEL_DB_URL": _through(write_url, proxies["relay_write_model_blackholed"])},
            "read_model_sync": {"AMQP_URL": _through(suite.amqp_url, proxies["sync_broker_blackholed"])},
        }
        workers_started = [
            # INFO: their `broker_connected` line; the first of each kind connects through its proxy
            suite.start(name, wait=False, LOG_LEVEL="INFO", **(through[name] if index == 0 else {}))
            for name in ("outbox_relay", "read_model_sync")
            for index in range(2)
        ]
        for worker in workers_started:  # faults begin once every process is up
            wait_until(lambda w=worker: "broker_connected" in w.logs(), 30, 0.1, f"{worker.name} to connect")
        write = db.create_engine(databases.write_url, 2, "chaos")
        read = db.create_engine(databases.read_url, 2, "chaos")
        stack.callback(write.dispose)
        stack.callback(read.dispose)

        history = History()
        stop_clients, stop_monitor = threading.Event(), threading.Event()
        workers = [
            threading.Thread(target=create_orders, args=(replicas, history, stop_clients, seed * 100 + index))
            for index in range(CLIENTS)
        ]
        workers.append(threading.Thread(target=page_continuously, args=(fetch, history, stop_clients)))
        pending: list[FaultRecord] = []
        monitor = threading.Thread(target=_watch_convergence, args=(write, read, pending, stop_monitor))
        for thread in [*workers, monitor]:
            thread.start()

        faults = Faults(suite, rng, role, proxies, left_out=left_out)
        rounds = 2 if duration >= TWO_ROUNDS_FROM_SECONDS else 1
        plan = faults.schedule(duration, rounds)
        started = time.monotonic()
        try:
            records = run_faults(
                faults,
                plan,
                rounds * len(faults.kinds()),
                duration,
                threading.Event(),
                lambda record: _heal_mark(record, write, pending),
                on_start=lambda record: _start_mark(record, write),
                before_heal=lambda record: _count_unprojected(record, write, read),
            )
        finally:
            stop_clients.set()
            stack.callback(stop_monitor.set)
        for thread in workers:
            thread.join(30)
        load_seconds = time.monotonic() - started

        drain_started = time.monotonic()
        drain_problems = []
        try:
            wait_until(lambda: _drained(write, read), DRAIN_SECONDS, 0.2, "the outbox and the read model to drain")
        except AssertionError:  # the checker below says what is missing
            drain_problems.append(f"the outbox and the read model did not drain within {DRAIN_SECONDS} s")
        drain_seconds = time.monotonic() - drain_started
        with contextlib.suppress(AssertionError):
            wait_until(lambda: all(r.converged_after is not None for r in records), CONVERGENCE_SECONDS, 0.2)
        stop_monitor.set()
        monitor.join(10)

        problems, figures = check(history, write, read, suite.amqp_url, fetch, cap)
        problems += drain_problems + _availability_problems(
            history, records, faults.blackhole_seconds, _missing_for_good(write, read)
        )
        problems += [f"{p.name} logged an unhandled error" for p in suite.processes if "unhandled_error" in p.logs()]
        problems += [
            f"{p.name} (pid {p.process.pid}) exited by itself with {p.process.returncode}"
            for p in faults.died()
            if p.process
        ]
        problems += [f"{r.kind}: {r.detail['skipped']}" for r in records if "skipped" in r.detail]
        return {
            "seed": seed,
            "duration_seconds": round(load_seconds, 1),
            "drain_seconds": round(drain_seconds, 2),
            "requests": sum(history.statuses.values()),
            "answers": dict(history.statuses),
            "fetch_answers": dict(history.fetch_statuses),
            "faults": [
                {
                    **asdict(r),
                    "started": round(r.started - started, 2),
                    "healed": round((r.healed or 0) - started, 2),
                    "converged_after": None if r.converged_after is None else round(r.converged_after, 2),
                }
                for r in records
            ],
            "fault_counts": dict(sorted({k: sum(r.kind == k for r in records) for k in faults.kinds()}.items())),
            **figures,
            "problems": problems,
        }


def _proxy(url: str) -> BlackholeProxy:
    parts = urlsplit(url)
    return BlackholeProxy(parts.hostname or "127.0.0.1", parts.port or {"amqp": 5672}.get(parts.scheme, 5432))


def _through(url: str, proxy: BlackholeProxy) -> str:
    """`url` (an AMQP or a Postgres URL) pointed at the proxy instead of the server."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{proxy.port}"))


def _newest_sequence(write: Engine) -> int | None:
    with contextlib.suppress(Exception), write.connect() as connection:
        return outbox.highest_order_sequence(connection)
    return None


def _start_mark(record: FaultRecord, write: Engine) -> None:
    if record.kind in BLACKHOLES:
        record.start_sequence = _newest_sequence(write)


def _count_unprojected(record: FaultRecord, write: Engine, read: Engine) -> None:
    """Just before a blackhole is healed: how many orders stored before it began are not projected yet."""
    if record.start_sequence is None:
        return
    bound = {"s": record.start_sequence}
    with contextlib.suppress(Exception):
        with write.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM buy_order WHERE sequence <= :s"), bound)
            expected = stored.scalar_one()
        with read.connect() as connection:
            seen = connection.execute(text("SELECT count(*) FROM buy_order_view WHERE sequence <= :s"), bound)
            record.unprojected_at_heal = expected - seen.scalar_one()


def _heal_mark(record: FaultRecord, write: Engine, pending: list[FaultRecord]) -> None:
    # the write model may itself be what just came back: the monitor tries again if this fails
    with contextlib.suppress(Exception), write.connect() as connection:
        record.heal_sequence = outbox.highest_order_sequence(connection)
    pending.append(record)


def _watch_convergence(write: Engine, read: Engine, pending: list[FaultRecord], stop: threading.Event) -> None:
    """For each healed fault: seconds until the read model holds every order stored before the heal."""
    while not stop.wait(0.1):
        for record in list(pending):
            if record.heal_sequence is None:
                _heal_mark(record, write, [])
                continue
            with contextlib.suppress(Exception):
                bound = {"s": record.heal_sequence}
                with write.connect() as connection:
                    stored = connection.execute(text("SELECT count(*) FROM buy_order WHERE sequence <= :s"), bound)
                    expected = stored.scalar_one()
                with read.connect() as connection:
                    seen = connection.execute(text("SELECT count(*) FROM buy_order_view WHERE sequence <= :s"), bound)
                    projected = seen.scalar_one()
                record.unconverged = expected - projected
                if projected == expected:
                    record.converged_after = max(time.monotonic() - (record.healed or 0), 0.0)
                    pending.remove(record)


def _drained(write: Engine, read: Engine) -> bool:
    try:
        with write.connect() as connection:
            unsent = outbox.unsent_count(connection)
            stored = connection.execute(text("SELECT count(*) FROM buy_order")).scalar_one()
        with read.connect() as connection:
            projected = connection.execute(text("SELECT count(*) FROM buy_order_view")).scalar_one()
    except Exception:
        return False
    return bool(unsent == 0 and stored == projected)


def _missing_for_good(write: Engine, read: Engine) -> list[int]:
    """The sequences of the orders still missing from the read model after the drain."""
    with write.connect() as connection:
        stored = set(connection.execute(text("SELECT sequence FROM buy_order")).scalars())
    with read.connect() as connection:
        projected = set(connection.execute(text("SELECT sequence FROM buy_order_view")).scalars())
    return sorted(stored - projected)


def _availability_problems(
    history: History, records: list[FaultRecord], blackhole_seconds: float, missing_for_good: list[int]
) -> list[str]:
    """What each fault should have left working; a gap explained by orders missing for good (the
    checker reports those) is said once, not as a failure of every later fault."""
    problems = []
    explained_by_missing: list[str] = []
    cap_reached = min(
        (
            attempt.at
            for key in history.keys.values()
            for attempt in key.attempts
            if attempt.status == 409 and (attempt.body or {}).get("detail", {}).get("code") == "btc_cap_exceeded"
        ),
        default=float("inf"),
    )

    def missing_up_to(sequence: int | None) -> int:
        return sum(1 for missing in missing_for_good if sequence is not None and missing <= sequence)

    for record in records:
        if "heal_failed" in record.detail:
            problems.append(f"healing {record.kind} failed: {record.detail['heal_failed']}")
        if record.converged_after is None:
            if record.unconverged is not None and record.unconverged <= missing_up_to(record.heal_sequence):
                explained_by_missing.append(record.kind)
            else:
                problems.append(f"the read model did not converge within {CONVERGENCE_SECONDS} s after {record.kind}")
        window = (record.started, (record.healed or record.started) + 0.5)
        if record.kind in NEED_ORDERS_FLOWING and window[1] < cap_reached:
            created = [at for at in history.created_at if window[0] <= at <= window[1]]
            if not created:
                problems.append(f"no order was created during {record.kind} (the write path does not need it)")
        if record.kind == "read_model_refusing":
            answers = [status for at, status in history.fetch_failures_at if window[0] <= at <= window[1]]
            if any(status != 503 for status in answers):
                problems.append(f"GET /buy_orders answered {answers} while the read model refused connections")
        stuck = (record.unprojected_at_heal or 0) - missing_up_to(record.start_sequence)
        if record.kind in BLACKHOLES and stuck > 0:
            problems.append(
                f"{stuck} orders stored before {record.kind} began were still not in the read model when it"
                f" ended {blackhole_seconds:g} s later: the silent failure was not worked around"
            )
    if explained_by_missing:
        problems.append(
            f"the read model did not converge after {', '.join(explained_by_missing)}, by no more than the"
            f" {len(missing_for_good)} orders missing for good (above)"
        )
    return problems


def summary(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)
