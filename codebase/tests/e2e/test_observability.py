"""Metrics that move when orders are made, and one request id followed through every process."""

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from btc_orders import web
from tests.e2e.conftest import Suite
from tests.support.services import ServiceProcess, free_port, wait_until

REPO = Path(__file__).resolve().parents[3]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def start_gunicorn(suite: Suite, service: str, port_variable: str, workers: int) -> ServiceProcess:
    port = free_port()
    env = {
        **suite.env,
        port_variable: str(port),
        "BTC_ORDERS_SERVICE": service,
        "WEB_CONCURRENCY": str(workers),
        "BTC_PRICE_URL": suite.service("btc_price").url,
    }
    log = suite.directory / f"gunicorn-{service}.log"
    process = ServiceProcess(service, env, log, port)
    process.process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "docker" / "gunicorn.conf.py")],
        env=env,
        cwd=suite.directory,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    suite.processes.append(process)
    process.wait_healthy(30)
    return process


def test_metrics_add_up_across_gunicorn_workers_and_move_with_orders(suite: Suite) -> None:
    suite.start("btc_price")
    create = start_gunicorn(suite, "create_buy_order", "CREATE_BUY_ORDER_PORT", workers=2)
    relay_port, sync_port = free_port(), free_port()
    suite.start("outbox_relay", wait=False, OUTBOX_RELAY_METRICS_PORT=str(relay_port))
    suite.start("read_model_sync", wait=False, READ_MODEL_SYNC_METRICS_PORT=str(sync_port))
    relay, sync = f"http://127.0.0.1:{relay_port}", f"http://127.0.0.1:{sync_port}"
    wait_until(lambda: _answers(relay) and _answers(sync), 20, 0.1, "the workers' metrics ports")

    before = scrape(create.url)
    with httpx.Client() as client:  # many connections, so both gunicorn workers answer some
        for _ in range(40):
            body = {"currency": "GBP", "amount": "10.00", "idempotence_key": str(uuid.uuid4())}
            with httpx.Client() as fresh:
                assert fresh.put(f"{create.url}/buy_order", json=body).status_code == 201
        over = client.put(
            f"{create.url}/buy_order",
            json={"currency": "GBP", "amount": "999999999.00", "idempotence_key": str(uuid.uuid4())},
        )
        assert over.status_code == 409
    after = scrape(create.url)
    created_by = _pids(create, "order_created")
    assert len(created_by) == 2, "both gunicorn workers should have stored orders"

    assert (
        value(after, "buy_orders_created_total", currency="GBP")
        - value(before, "buy_orders_created_total", currency="GBP")
        == 40
    )
    assert value(after, "buy_orders_rejected_total", code="btc_cap_exceeded") == 1
    requests = value(after, "http_requests_total", route="/buy_order", method="PUT", status="201")
    assert requests - value(before, "http_requests_total", route="/buy_order", method="PUT", status="201") == 40
    assert value(after, "http_request_duration_seconds_count", route="/buy_order") >= 41
    assert value(after, "btc_cap_btc") == 100
    assert 99.99 < value(after, "btc_cap_remaining_btc") < 100  # 40 x ~0.000127 BTC used

    price = scrape(suite.service("btc_price").url)
    assert value(price, "rate_cache_misses_total", currency="GBP") >= 1
    assert value(price, "rate_upstream_failures_total") == 0

    def projected() -> bool:
        relay_samples, sync_samples = scrape(relay), scrape(sync)
        return (
            value(relay_samples, "events_confirmed_total") == 40
            and value(sync_samples, "events_applied_total") == 40
            and value(relay_samples, "write_model_max_sequence") == value(sync_samples, "read_model_max_sequence")
        )

    wait_until(projected, 20, 0.2, "every event published, confirmed and applied")
    wait_until(lambda: value(scrape(relay), "outbox_backlog") == 0, 5, 0.2, "an empty outbox backlog")

    fetch = start_gunicorn(suite, "fetch_buy_orders", "FETCH_BUY_ORDERS_PORT", workers=2)
    for _ in range(6):
        with httpx.Client() as fresh:
            assert fresh.get(f"{fetch.url}/buy_orders", params={"page_size": 5}).status_code == 200
    pages = scrape(fetch.url)
    assert value(pages, "http_requests_total", route="/buy_orders", method="GET", status="200") == 6


def _pids(process: ServiceProcess, event: str) -> set[int]:
    lines = [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
    return {line["pid"] for line in lines if line.get("event") == event}


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_one_request_id_is_on_the_log_lines_of_every_process_that_handled_the_order(suite: Suite) -> None:
    suite.start("btc_price")
    create = suite.start("create_buy_order")
    suite.start("outbox_relay", wait=False)
    sync = suite.start("read_model_sync", wait=False)
    request_id = f"follow-me-{uuid.uuid4().hex[:8]}"
    body = {"currency": "EUR", "amount": "3.00", "idempotence_key": str(uuid.uuid4())}
    response = httpx.put(f"{create.url}/buy_order", json=body, headers={"X-Request-ID": request_id})
    assert response.status_code == 201
    order_id = response.json()["id"]
    wait_until(lambda: order_id in sync.logs(), 20, 0.1, "the worker to apply the order")

    def events(process: ServiceProcess) -> set[str]:
        lines = [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
        return {line["event"] for line in lines if line.get("request_id") == request_id}

    assert {"order_created", "http_request"} <= events(create)
    assert "http_request" in events(suite.service("btc_price"))
    assert "event_published" in events(suite.service("outbox_relay"))
    assert "event_applied" in events(sync)


def test_a_worker_whose_request_threads_are_all_busy_still_answers_its_probes(suite: Suite) -> None:
    """Requests hold the worker's only connection (`DB_POOL_SIZE=1`), stuck on cap slots another
    transaction has locked; `/healthz`, `/metrics` and `/readyz` must still answer."""
    suite.start("btc_price")
    create = suite.start("create_buy_order", DB_POOL_SIZE="1")
    body = {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())}
    locker = psycopg.connect(suite.databases.write_url)
    try:
        with locker.cursor() as cursor:
            cursor.execute("SELECT slot FROM cap_slot FOR UPDATE")  # every slot, held until rollback
        with ThreadPoolExecutor(3) as pool:
            stuck = [pool.submit(httpx.put, f"{create.url}/buy_order", json=body, timeout=30) for _ in range(3)]
            wait_until(lambda: locked_waiters(locker) >= 1, timeout=10)
            assert not any(future.done() for future in stuck)
            assert httpx.get(f"{create.url}/healthz", timeout=2).status_code == 200
            scraped = httpx.get(f"{create.url}/metrics", timeout=8)  # the cap gauges wait for the pool (3 s)
            assert scraped.status_code == 200 and "http_requests_total" in scraped.text
            ready = httpx.get(f"{create.url}/readyz", timeout=8)  # answered, if only to say the pool is busy
            assert ready.status_code in (200, 503)
            assert ready.json()["checks"]["btc_price"] is True
            locker.rollback()
            # The one connection's request is stored; the others waited for it (at most 3 s, the pool's
            # bound): a replay if it came free in time, else a 503 to retry, never a 500.
            answers = [future.result().status_code for future in stuck]
            assert answers.count(201) == 1 and set(answers) <= {200, 201, 503}, answers
    finally:
        locker.close()


def locked_waiters(connection: "psycopg.Connection[Any]") -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        (count,) = cursor.fetchone()
    return int(count)


def test_a_storm_of_probes_keeps_threads_bounded_and_orders_served(suite: Suite) -> None:
    """300 concurrent /readyz and 300 /metrics share one bounded set of probe threads (not a thread
    each), and the probes' connections are their own: an order placed during the storm is stored."""
    suite.start("btc_price")
    create = suite.start("create_buy_order", DB_POOL_SIZE="4")
    assert create.process is not None
    tasks = Path(f"/proc/{create.process.pid}/task")
    order = {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())}
    assert httpx.put(f"{create.url}/buy_order", json=order, timeout=10).status_code == 201
    assert httpx.get(f"{create.url}/readyz", timeout=10).status_code == 200
    baseline = len(list(tasks.iterdir()))
    peak = baseline
    storming = threading.Event()
    answers: list[int] = []

    async def storm() -> None:
        limits = httpx.Limits(max_connections=600, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=create.url, limits=limits, timeout=60) as client:
            probes = [client.get(path) for path in ("/readyz", "/metrics") for _ in range(300)]
            storming.set()
            answers.extend(response.status_code for response in await asyncio.gather(*probes))

    stormer = threading.Thread(target=asyncio.run, args=(storm(),))
    stormer.start()
    storming.wait(10)
    placed = None
    while stormer.is_alive():
        peak = max(peak, len(list(tasks.iterdir())))
        if placed is None:
            during = {"currency": "EUR", "amount": "2.00", "idempotence_key": str(uuid.uuid4())}
            placed = httpx.put(f"{create.url}/buy_order", json=during, timeout=30)
        time.sleep(0.005)
    stormer.join()
    assert placed is not None and placed.status_code == 201, placed.text if placed else None
    assert answers.count(200) == 600, sorted(set(answers))
    # request threads (DB_POOL_SIZE) + probe threads + the few of uvicorn and the clients; 300+ before
    assert peak <= baseline + 4 + web.PROBE_THREADS + 4, (baseline, peak)
