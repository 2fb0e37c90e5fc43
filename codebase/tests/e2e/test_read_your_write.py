"""Read your own write: the 201's Location, `Prefer: wait`, and `GET /capacity`, end to end."""

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from btc_orders.adapters import db
from tests.e2e.conftest import Suite
from tests.support.services import admin_connection, wait_until


def put(url: str, currency: str = "USD", amount: str = "10.00") -> httpx.Response:
    body = {"currency": currency, "amount": amount, "idempotence_key": str(uuid.uuid4())}
    return httpx.put(f"{url}/buy_order", json=body, timeout=10)


def connections(suite: Suite, application_name: str) -> int:
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (suite.databases.read_name, application_name),
        )
        count: int = cursor.fetchone()[0]
    connection.close()
    return count


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


@pytest.fixture
def without_worker(suite: Suite) -> tuple[Suite, str, str]:
    """The suite with everything but read_model_sync: orders are stored, not projected yet."""
    suite.start("btc_price")
    create = suite.start("create_buy_order", PUBLIC_FETCH_URL="")
    fetch = suite.start("fetch_buy_orders", READ_YOUR_WRITE_MAX_WAIT_SECONDS="120")
    suite.start("outbox_relay", wait=False)
    return suite, create.url, fetch.url


def test_a_waiting_read_answers_as_soon_as_the_worker_projects_the_order(
    without_worker: tuple[Suite, str, str],
) -> None:
    suite, create, fetch = without_worker
    placed = put(create)
    assert placed.status_code == 201
    location = placed.headers["location"]
    assert location == f"/buy_orders/{placed.json()['id']}"
    assert httpx.get(f"{fetch}{location}").status_code == 404  # not projected: the worker is not running
    answers: list[httpx.Response] = []
    worker_started = threading.Event()

    def wait_for_it() -> None:
        response = httpx.get(f"{fetch}{location}", headers={"Prefer": "wait=100"}, timeout=130)
        answers.append(response)
        assert worker_started.is_set(), "answered before the order could exist"

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    wait_until(lambda: connections(suite, "fetch_buy_orders_listen") == 1, 10, 0.05, "the listener")
    threading.Event().wait(0.5)  # the request is waiting by now (if not, it finds the order: still valid)
    worker_started.set()
    suite.start("read_model_sync", wait=False)
    waiter.join(130)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json() == placed.json()
    assert answer.headers["preference-applied"] == "wait=100"


def test_two_hundred_concurrent_waiters_share_one_listening_connection(without_worker: tuple[Suite, str, str]) -> None:
    suite, create, fetch = without_worker
    with ThreadPoolExecutor(16) as pool:
        placed = list(pool.map(lambda _: put(create), range(200)))
    assert all(response.status_code == 201 for response in placed)
    fetch_process = suite.service("fetch_buy_orders").process
    assert fetch_process is not None
    observed: dict[str, Any] = {}

    async def wait_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(base_url=fetch, limits=limits, timeout=130) as client:
            requests = [client.get(response.headers["location"], headers={"Prefer": "wait=100"}) for response in placed]
            gathered = asyncio.gather(*requests)
            await asyncio.sleep(2)  # every request is waiting now
            observed["listen"] = connections(suite, "fetch_buy_orders_listen")
            observed["pooled"] = connections(suite, "fetch_buy_orders")
            observed["cpu_waiting"] = cpu_seconds(fetch_process.pid)
            suite.start("read_model_sync", wait=False)
            return list(await gathered)

    before = cpu_seconds(fetch_process.pid)
    answers = asyncio.run(wait_all())
    assert [answer.status_code for answer in answers] == [200] * 200
    assert [answer.json() for answer in answers] == [response.json() for response in placed]
    assert all(answer.headers["preference-applied"] == "wait=100" for answer in answers)
    # one LISTEN connection for the process, and no more pooled connections than the pool holds
    # (DB_POOL_SIZE, default 20): 200 waiters do not each hold a connection or a thread
    assert observed["listen"] == 1
    assert observed["pooled"] <= 20
    print(
        f"200 waiters: listen connections {observed['listen']}, pooled {observed['pooled']}, fetch CPU "
        f"{observed['cpu_waiting'] - before:.2f} s while they were sent and waited, "
        f"{cpu_seconds(fetch_process.pid) - observed['cpu_waiting']:.2f} s to answer them"
    )


def test_a_wait_that_times_out_is_a_404_with_retry_after(suite: Suite) -> None:
    fetch = suite.start("fetch_buy_orders", READ_YOUR_WRITE_MAX_WAIT_SECONDS="1").url
    wait_until(lambda: connections(suite, "fetch_buy_orders_listen") == 1, 10, 0.05, "the listener")
    missing = f"{fetch}/buy_orders/{uuid.uuid4()}"
    waited = httpx.get(missing, headers={"Prefer": "respond-async, wait=30"}, timeout=10)
    assert waited.status_code == 404
    assert waited.json()["detail"]["code"] == "order_not_found"
    assert waited.headers["retry-after"] == "1"
    assert waited.headers["preference-applied"] == "wait=1"  # capped by the setting
    plain = httpx.get(missing)
    assert plain.status_code == 404 and "retry-after" not in plain.headers  # as before: no Prefer, no wait
    assert "preference-applied" not in plain.headers
    for unreadable in ("wait=soon", "wait=-1", "wait=0"):
        answer = httpx.get(missing, headers={"Prefer": unreadable})
        assert answer.status_code == 404 and "preference-applied" not in answer.headers, unreadable


def test_past_the_waiter_limit_a_request_is_answered_at_once(suite: Suite) -> None:
    fetch = suite.start("fetch_buy_orders", READ_YOUR_WRITE_MAX_WAITERS="0").url
    answer = httpx.get(f"{fetch}/buy_orders/{uuid.uuid4()}", headers={"Prefer": "wait=30"}, timeout=10)
    assert answer.status_code == 404
    assert "preference-applied" not in answer.headers  # not honoured: not waited


def test_with_a_public_fetch_url_the_location_is_absolute_and_leads_to_the_order(suite: Suite) -> None:
    suite.start("btc_price")
    fetch = suite.start("fetch_buy_orders", READ_YOUR_WRITE_MAX_WAIT_SECONDS="120")
    create = suite.start("create_buy_order", PUBLIC_FETCH_URL=f"{fetch.url}/")
    suite.start("outbox_relay", wait=False)
    suite.start("read_model_sync", wait=False)
    placed = put(create.url)
    assert placed.headers["location"] == f"{fetch.url}/buy_orders/{placed.json()['id']}"
    followed = httpx.get(placed.headers["location"], headers={"Prefer": "wait=100"}, timeout=130)
    assert followed.status_code == 200
    assert followed.json() == placed.json()


def test_a_malformed_public_fetch_url_stops_the_process_with_one_line(suite: Suite) -> None:
    process = suite.start("create_buy_order", wait=False, PUBLIC_FETCH_URL="localhost:8778", BTC_PRICE_URL="http://x")
    assert process.process is not None
    assert process.process.wait(20) != 0
    lines = process.logs().strip().splitlines()
    assert lines[-1].startswith("configuration error: PUBLIC_FETCH_URL"), lines


# ---------------------------------------------------------------------------------------------
# GET /capacity


def capacity(url: str) -> dict[str, Decimal]:
    response = httpx.get(f"{url}/capacity", timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"cap_btc", "used_btc", "available_btc"}
    assert all(len(value.split(".")[1]) == 8 for value in body.values()), body  # BTC, 8 places
    return {name: Decimal(value) for name, value in body.items()}


def stored_btc(suite: Suite) -> Decimal:
    engine = db.create_engine(suite.databases.write_url, 1)
    with engine.connect() as connection:
        total: Decimal = connection.execute(text("SELECT coalesce(sum(bitcoin_amount), 0) FROM buy_order")).scalar()
    engine.dispose()
    return total


def test_capacity_is_never_above_the_cap_under_concurrent_creates_and_exact_at_rest(suite: Suite) -> None:
    suite.start("btc_price")
    create = suite.start("create_buy_order", BTC_CAP="0.05").url
    assert capacity(create) == {"cap_btc": Decimal("0.05"), "used_btc": Decimal(0), "available_btc": Decimal("0.05")}
    stop = threading.Event()
    readings: list[dict[str, Decimal]] = []

    def read() -> None:
        while not stop.is_set():
            readings.append(capacity(create))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    with ThreadPoolExecutor(24) as pool:  # 0.05 BTC fits about 48 orders of 100 USD: many get 409
        statuses = list(pool.map(lambda _: put(create, "USD", "100.00").status_code, range(120)))
    stop.set()
    for reader in readers:
        reader.join(30)
    assert set(statuses) == {201, 409}
    assert readings
    for reading in readings:
        assert reading["cap_btc"] == Decimal("0.05")
        assert Decimal(0) <= reading["used_btc"] <= reading["cap_btc"]
        assert reading["used_btc"] + reading["available_btc"] == reading["cap_btc"]
    at_rest = capacity(create)
    assert at_rest["used_btc"] == stored_btc(suite)
    assert at_rest["available_btc"] == Decimal("0.05") - stored_btc(suite)
