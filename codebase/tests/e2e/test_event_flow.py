"""Orders flow from the write model to the read model, whatever dies on the way."""

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pika
import pytest
from sqlalchemy import text

from btc_orders.adapters import db, rabbitmq
from tests.e2e.conftest import Suite
from tests.support.services import admin_connection, publish_confirmed, rabbitmqctl, wait_until

ORDER_FIELDS = "id, created_at, currency, amount::text, exchange_rate::text, bitcoin_amount::text, idempotence_key"


def write_model_orders(suite: Suite) -> dict[str, tuple[Any, ...]]:
    engine = db.create_engine(suite.databases.write_url, 1)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id::text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
                " currency, amount::text, exchange_rate::text, bitcoin_amount::text, idempotence_key::text, sequence"
                " FROM buy_order"
            )
        ).all()
    engine.dispose()
    return {row[0]: tuple(row) for row in rows}


def read_model_orders(suite: Suite) -> dict[str, tuple[Any, ...]]:
    engine = db.create_engine(suite.databases.read_url, 1)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id::text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
                " currency, amount, exchange_rate, bitcoin_amount, idempotence_key::text, sequence"
                " FROM buy_order_view"
            )
        ).all()
    engine.dispose()
    return {row[0]: tuple(row) for row in rows}


def assert_read_model_converges(suite: Suite, timeout: float = 30) -> dict[str, tuple[Any, ...]]:
    """The read model ends equal to the write model: same ids, same fields, nothing extra."""
    expected = write_model_orders(suite)
    wait_until(lambda: read_model_orders(suite) == expected, timeout, 0.1, "the read model to equal the write model")
    return expected


class Clients:
    """Concurrent order creation through the public API, one pooled client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=10)

    def create(self, count: int, concurrency: int = 16) -> list[dict[str, Any]]:
        def one(index: int) -> dict[str, Any]:
            body = {
                "currency": ("EUR", "GBP", "USD")[index % 3],
                "amount": f"{index % 97 + 1}.{index % 100:02d}",
                "idempotence_key": str(uuid.uuid4()),
            }
            response = self.http.put(f"{self.url}/buy_order", json=body)
            assert response.status_code == 201, response.text
            return dict(response.json())

        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, range(count)))


@pytest.fixture
def flow(suite: Suite) -> tuple[Suite, Clients, str]:
    suite.start("btc_price")
    create = suite.start("create_buy_order")
    fetch = suite.start("fetch_buy_orders")
    suite.start("outbox_relay", wait=False)
    suite.start("read_model_sync", wait=False)
    return suite, Clients(create.url), fetch.url


def page_through(fetch_url: str, page_size: int) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    reference = None
    while True:
        params: dict[str, Any] = {"page_size": page_size}
        if reference:
            params["last_reference"] = reference
        response = httpx.get(f"{fetch_url}/buy_orders", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["buy_orders"]) <= page_size
        orders.extend(page["buy_orders"])
        if not page["has_more"]:
            assert page["last_reference"] == (page["buy_orders"][-1]["id"] if page["buy_orders"] else None)
            return orders
        assert len(page["buy_orders"]) == page_size
        reference = page["last_reference"]


def test_hundreds_of_concurrent_orders_reach_the_read_model_and_page_newest_first(
    flow: tuple[Suite, Clients, str],
) -> None:
    suite, clients, fetch_url = flow
    created = clients.create(300)
    expected = assert_read_model_converges(suite)
    assert set(expected) == {order["id"] for order in created}
    by_sequence = sorted(expected.values(), key=lambda row: row[-1], reverse=True)
    created_by_id = {order["id"]: order for order in created}
    for page_size in (1, 7, 1000):
        paged = page_through(fetch_url, page_size)
        assert [order["id"] for order in paged] == [row[0] for row in by_sequence]
    # The read side serves each order exactly as the write side answered it.
    for order in page_through(fetch_url, 100):
        assert order == created_by_id[order["id"]]
    one = created[0]
    assert httpx.get(f"{fetch_url}/buy_orders/{one['id']}").json() == one


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"page_size": 0}, 422),
        ({"page_size": 1001}, 422),
        ({"page_size": "ten"}, 422),
        ({"last_reference": "not-a-uuid"}, 422),
        ({"last_reference": str(uuid.uuid4())}, 404),
    ],
)
def test_bad_paging_parameters_are_refused(suite: Suite, params: dict[str, Any], status: int) -> None:
    fetch = suite.start("fetch_buy_orders")
    response = httpx.get(f"{fetch.url}/buy_orders", params=params)
    assert response.status_code == status
    if status == 404:
        assert response.json()["detail"]["code"] == "unknown_reference"


def test_an_empty_read_model_is_one_empty_page_and_unknown_orders_are_404(suite: Suite) -> None:
    fetch = suite.start("fetch_buy_orders")
    assert httpx.get(f"{fetch.url}/buy_orders").json() == {
        "buy_orders": [],
        "first_reference": None,
        "last_reference": None,
        "has_more": False,
    }
    missing = httpx.get(f"{fetch.url}/buy_orders/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["detail"]["code"] == "order_not_found"


def test_the_relay_killed_between_publish_and_mark_loses_and_duplicates_nothing(
    flow: tuple[Suite, Clients, str],
) -> None:
    suite, clients, _ = flow
    relay = suite.service("outbox_relay")
    for _ in range(3):
        creator = threading.Thread(target=clients.create, args=(60, 4))
        creator.start()
        wait_until(lambda r=relay: "event_published" in r.logs(), 20, 0.01, "the relay to publish")
        relay.kill()  # SIGKILL while it publishes: some rows published but not marked sent
        creator.join()
        relay = suite.start("outbox_relay", wait=False)
    assert_read_model_converges(suite)


def test_the_worker_killed_before_it_acks_loses_and_duplicates_nothing(flow: tuple[Suite, Clients, str]) -> None:
    suite, clients, _ = flow
    for _ in range(3):
        worker = suite.service("read_model_sync")
        creator = threading.Thread(target=clients.create, args=(60, 4))
        creator.start()
        wait_until(lambda w=worker: "event_applied" in w.logs(), 20, 0.01, "the worker to apply events")
        worker.kill()
        creator.join()
        suite.start("read_model_sync", wait=False)
    assert_read_model_converges(suite)
    assert_queue_empty(suite, rabbitmq.DEAD_LETTER_QUEUE)


def test_closed_broker_connections_are_reconnected(flow: tuple[Suite, Clients, str]) -> None:
    suite, clients, _ = flow
    vhost = suite.amqp_url.rsplit("/", 1)[1]
    for _ in range(3):
        creator = threading.Thread(target=clients.create, args=(40, 4))
        creator.start()
        wait_until(lambda: len(connections(vhost)) >= 2, 20, 0.05, "relay and worker to connect")
        rabbitmqctl("close_all_connections", "-p", vhost, "chaos test")
        creator.join()
    assert_read_model_converges(suite)


def test_a_read_model_refusing_connections_delays_but_loses_nothing(flow: tuple[Suite, Clients, str]) -> None:
    suite, clients, fetch_url = flow
    clients.create(10)
    assert_read_model_converges(suite)
    name = suite.databases.read_name
    admin = admin_connection()
    with admin.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        clients.create(50)  # creates keep succeeding: the write side does not need the read side
        outage = httpx.get(f"{fetch_url}/buy_orders")
        assert outage.status_code == 503
        assert outage.json()["detail"]["code"] == "service_unavailable"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        admin.close()
    assert_read_model_converges(suite)
    assert httpx.get(f"{fetch_url}/buy_orders").status_code == 200


def test_poison_messages_are_dead_lettered_while_good_events_flow(flow: tuple[Suite, Clients, str]) -> None:
    suite, clients, _ = flow
    clients.create(5)
    assert_read_model_converges(suite)
    good_event = json.dumps({"event_id": str(uuid.uuid4()), "type": "buy_order.created", "version": 1})
    poison = [
        b"not json at all",
        b'{"type": "buy_order.created"}',
        good_event.encode(),
        b"[]",
        json.dumps(
            {
                "type": "buy_order.created",
                "version": 2,
                "event_id": str(uuid.uuid4()),
                "occurred_at": "2026-01-01T00:00:00Z",
                "order": {},
            }
        ).encode(),
    ]
    # Valid by the schema, but the database refuses it: another sequence for an existing order id.
    existing = next(iter(read_model_orders(suite)))
    clash = {
        "event_id": str(uuid.uuid4()),
        "type": "buy_order.created",
        "version": 1,
        "occurred_at": "2026-01-01T00:00:00.000000Z",
        "request_id": None,
        "order": {
            "id": existing,
            "sequence": 10**9,
            "created_at": "2026-01-01T00:00:00.000000Z",
            "currency": "USD",
            "amount": "1.00",
            "exchange_rate": "97012.34",
            "bitcoin_amount": "0.00001031",
            "idempotence_key": str(uuid.uuid4()),
        },
    }
    poison.append(json.dumps(clash).encode())
    publish_confirmed(suite.amqp_url, rabbitmq.EXCHANGE, rabbitmq.ROUTING_KEY, poison)
    clients.create(20)
    assert_read_model_converges(suite)
    try:
        wait_until(lambda: queue_depth(suite, rabbitmq.DEAD_LETTER_QUEUE) == len(poison), 20, 0.1, "dead letters")
    except AssertionError as timeout:  # say what was there: too few, too many, or still queued
        dead, queued = queue_depth(suite, rabbitmq.DEAD_LETTER_QUEUE), queue_depth(suite, rabbitmq.QUEUE)
        raise AssertionError(f"{timeout}: {dead} of {len(poison)} dead-lettered, {queued} still queued") from None
    assert "event_dead_lettered" in suite.service("read_model_sync").logs()


def connections(vhost: str) -> list[str]:
    return [line for line in rabbitmqctl("list_connections", "-q", "vhost").splitlines() if line.strip() == vhost]


def queue_depth(suite: Suite, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(suite.amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def assert_queue_empty(suite: Suite, queue: str) -> None:
    assert queue_depth(suite, queue) == 0
