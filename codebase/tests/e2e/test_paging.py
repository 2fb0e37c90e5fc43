"""`GET /buy_orders` end to end: both directions, filters and the Link header, against brute force
over the write model.

Orders are placed through the API; a few more are stored straight into the write model with a
`created_at` minutes out of sequence order (with their outbox events, so the relay and the worker
carry them like any other): the cheapest way to get a history the time filters must be exact on.
"""

import itertools
import json
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from btc_orders.adapters import db
from btc_orders.domain.orders import BuyOrder, Currency
from btc_orders.events import EVENT_TYPE, created_event
from tests.e2e.conftest import Suite
from tests.e2e.test_event_flow import Clients, assert_read_model_converges

CURRENCIES = ("EUR", "GBP", "USD")
_LINK = re.compile(r'<([^>]*)>; rel="(next|prev)"')


def store_out_of_order(suite: Suite, count: int, rng: random.Random) -> None:
    """Orders whose created_at is minutes before or after their neighbours', with their events."""
    engine = db.create_engine(suite.databases.write_url, 1)
    with engine.begin() as connection:
        for _ in range(count):
            shift = timedelta(seconds=rng.randint(-600, 600))
            row = connection.execute(
                text(
                    "INSERT INTO buy_order (id, idempotence_key, created_at, currency, amount, exchange_rate,"
                    " bitcoin_amount) VALUES (:id, :key, now() + :shift, :currency, 10.00, 97012.34, 0.00010308)"
                    " RETURNING sequence, created_at"
                ),
                {"id": uuid.uuid4(), "key": uuid.uuid4(), "shift": shift, "currency": rng.choice(CURRENCIES)},
            ).one()
            order = connection.execute(
                text("SELECT * FROM buy_order WHERE sequence = :sequence"), {"sequence": row.sequence}
            ).one()
            stored = BuyOrder(
                order.id, order.sequence, order.created_at, Currency(order.currency), order.amount,
                Decimal(order.exchange_rate), order.bitcoin_amount, order.idempotence_key,
            )  # fmt: skip
            event_id = uuid.uuid4()
            connection.execute(
                text(
                    "INSERT INTO outbox (event_id, order_sequence, routing_key, payload)"
                    " VALUES (:event_id, :sequence, :routing_key, :payload)"
                ),
                {
                    "event_id": event_id,
                    "sequence": stored.sequence,
                    "routing_key": EVENT_TYPE,
                    "payload": created_event(stored, event_id, None),
                },
            )
    engine.dispose()


def brute_force(write_model: dict[str, tuple[Any, ...]], params: dict[str, Any]) -> list[str]:
    """The ids the filter selects, newest first, from the write model's rows."""
    currencies = params.get("currency") or CURRENCIES
    gte = params.get("created_gte")
    lt = params.get("created_lt")
    rows = sorted(write_model.values(), key=lambda row: row[-1], reverse=True)
    return [
        row[0]
        for row in rows
        if row[2] in currencies and (gte is None or row[1] >= gte) and (lt is None or row[1] < lt)
    ]


def links(response: httpx.Response) -> dict[str, str]:
    return {rel: url for url, rel in _LINK.findall(response.headers.get("link", ""))}


def follow(fetch: str, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Down by rel="next" from the newest page to the oldest, then up by rel="prev" to the newest:
    the ids met each way, newest first. Only the Link header is followed: no URL is built."""
    client = httpx.Client(base_url=fetch, timeout=10)
    response = client.get("/buy_orders", params=params)
    assert response.status_code == 200, response.text
    assert "prev" not in links(response)  # the newest page has nothing newer
    down = [order["id"] for order in response.json()["buy_orders"]]
    pages = [response]
    while "next" in links(response):
        response = client.get(links(response)["next"])
        assert response.status_code == 200, response.text
        assert response.json()["buy_orders"], "a next link leads to a page with orders"
        down += [order["id"] for order in response.json()["buy_orders"]]
        pages.append(response)
    assert response.json()["has_more"] is False
    up_pages = [response.json()["buy_orders"]]
    while "prev" in links(response):
        response = client.get(links(response)["prev"])
        assert response.status_code == 200, response.text
        up_pages.append(response.json()["buy_orders"])
    client.close()
    up = [order["id"] for page in reversed(up_pages) for order in page]
    for page in pages:  # every other parameter is kept in the links
        for url in links(page).values():
            kept = httpx.URL(url).params
            for name, value in params.items():
                assert kept.get_list(name) == ([*value] if isinstance(value, list) else [str(value)])
    return down, up


@pytest.fixture(scope="module")
def history(shared_suite: Suite) -> tuple[Suite, str, dict[str, tuple[Any, ...]]]:
    shared_suite.start("btc_price")
    create = shared_suite.start("create_buy_order")
    fetch = shared_suite.start("fetch_buy_orders")
    shared_suite.start("outbox_relay", wait=False)
    shared_suite.start("read_model_sync", wait=False)
    rng = random.Random(15)
    Clients(create.url).create(45, concurrency=8)
    store_out_of_order(shared_suite, 12, rng)
    Clients(create.url).create(15, concurrency=4)
    return shared_suite, fetch.url, assert_read_model_converges(shared_suite)


def test_links_from_the_newest_page_to_the_oldest_and_back_meet_every_order_once_each_way(
    history: tuple[Suite, str, dict[str, tuple[Any, ...]]],
) -> None:
    _suite, fetch, write_model = history
    for page_size in (1, 4, 7, 100):
        down, up = follow(fetch, {"page_size": page_size})
        expected = brute_force(write_model, {})
        assert down == expected and up == expected, page_size


def test_every_filter_combination_selects_exactly_what_the_write_model_holds(
    history: tuple[Suite, str, dict[str, tuple[Any, ...]]],
) -> None:
    _suite, fetch, write_model = history
    stamps = sorted(row[1] for row in write_model.values())
    # bounds on orders' own times (the edges) and between them
    instants = [None, stamps[0], stamps[len(stamps) // 3], stamps[len(stamps) // 2], stamps[-1]]
    later = (datetime.fromisoformat(stamps[-1]) + timedelta(microseconds=1)).astimezone(UTC)
    instants.append(later.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    currency_sets = [[], ["GBP"], ["EUR", "USD"], list(CURRENCIES)]
    checked = 0
    for currencies, gte, lt in itertools.product(currency_sets, instants, instants):
        params: dict[str, Any] = {"page_size": 5}
        if currencies:
            params["currency"] = currencies
        if gte:
            params["created_gte"] = gte
        if lt:
            params["created_lt"] = lt
        expected = brute_force(write_model, params)
        down, up = follow(fetch, params)
        assert down == expected and up == expected, params
        checked += bool(expected)
    assert checked > 20  # most combinations select something


def test_an_offset_in_the_timestamp_is_honoured(history: tuple[Suite, str, dict[str, tuple[Any, ...]]]) -> None:
    _suite, fetch, write_model = history
    middle = sorted(row[1] for row in write_model.values())[len(write_model) // 2]
    in_utc = datetime.fromisoformat(middle)
    in_paris = in_utc.astimezone(datetime.now(UTC).astimezone().tzinfo or UTC).isoformat()
    plus_two = in_utc.astimezone(datetime.strptime("+0200", "%z").tzinfo).isoformat()  # type: ignore[arg-type]
    for stamp in (middle, in_paris, plus_two):
        page = httpx.get(f"{fetch}/buy_orders", params={"created_lt": stamp, "page_size": 1000}).json()
        assert [o["id"] for o in page["buy_orders"]] == brute_force(write_model, {"created_lt": middle}), stamp


@pytest.mark.parametrize(
    "params",
    [
        {"last_reference": str(uuid.uuid4()), "first_reference": str(uuid.uuid4())},  # both
        {"created_gte": "2026-01-01T00:00:00"},  # naive: which zone?
        {"created_lt": "2026-01-01"},
        {"created_lt": "1700000000"},
        {"created_gte": "2026-13-01T00:00:00Z"},
        {"currency": "XXX"},
        {"first_reference": "not-a-uuid"},
    ],
)
def test_malformed_parameters_are_a_422_naming_the_parameter(
    history: tuple[Suite, str, dict[str, tuple[Any, ...]]], params: dict[str, str]
) -> None:
    _suite, fetch, _write_model = history
    response = httpx.get(f"{fetch}/buy_orders", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "query"
    assert response.json()["detail"][0]["loc"][1] in params


def test_an_unknown_first_reference_is_a_404(history: tuple[Suite, str, dict[str, tuple[Any, ...]]]) -> None:
    _suite, fetch, _write_model = history
    response = httpx.get(f"{fetch}/buy_orders", params={"first_reference": str(uuid.uuid4()), "currency": "GBP"})
    assert response.status_code == 404
    assert response.json()["detail"]["code"] == "unknown_reference"


def test_the_running_service_serves_the_committed_openapi_document(
    history: tuple[Suite, str, dict[str, tuple[Any, ...]]],
) -> None:
    _suite, fetch, _write_model = history
    committed = Path(__file__).resolve().parents[3] / "docs" / "openapi" / "fetch_buy_orders.json"
    assert httpx.get(f"{fetch}/openapi.json").json() == json.loads(committed.read_text()), (
        "run python -m btc_orders.services.openapi_documents --write docs/openapi"
    )
