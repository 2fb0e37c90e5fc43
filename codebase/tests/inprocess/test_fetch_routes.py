"""fetch_buy_orders' routes in process: parameters, `Link`, `Prefer: wait` and the error mapping.

The app is built as it serves (`create_app` does no I/O) with in-memory fakes as its read model
and arrivals.
"""

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from btc_orders.adapters.read_model import PageBody, PageQuery
from btc_orders.domain.errors import OrderNotFound, ServiceUnavailable, UnknownReference
from btc_orders.services.fetch_buy_orders import deps
from btc_orders.services.fetch_buy_orders.app import create_app
from btc_orders.settings import FetchBuyOrdersSettings

SETTINGS = FetchBuyOrdersSettings(READ_MODEL_DB_URL="postgresql://nowhere/read", READ_YOUR_WRITE_MAX_WAIT_SECONDS=5)
ORDER_ID = uuid.uuid4()
ORDER = orjson.dumps({"id": str(ORDER_ID), "currency": "USD"})


@dataclass
class FakeArrivals:
    """Offers a wait (or not); `land()` sets the waiting request's event, from any thread."""

    offers: bool = True
    waited_for: list[uuid.UUID] = field(default_factory=list)
    _land: list[object] = field(default_factory=list)

    @contextmanager
    def wait_for(self, order_id: uuid.UUID) -> Iterator[asyncio.Event | None]:
        if not self.offers:
            yield None
            return
        self.waited_for.append(order_id)
        event, loop = asyncio.Event(), asyncio.get_running_loop()
        self._land.append(lambda: loop.call_soon_threadsafe(event.set))
        yield event

    def land(self) -> None:
        for land in self._land:
            land()  # type: ignore[operator]


@dataclass
class FakeReadModel:
    """Pages and orders as stored documents; `missing` misses before the order is found."""

    arrivals: FakeArrivals
    page: PageBody = field(default_factory=lambda: PageBody(b'{"buy_orders":[]}', None, None, False, False))
    queries: list[PageQuery] = field(default_factory=list)
    missing: int = 0
    failure: Exception | None = None

    async def fetch_page(self, query: PageQuery) -> PageBody:
        self.queries.append(query)
        if self.failure is not None:
            raise self.failure
        return self.page

    async def one_body(self, order_id: uuid.UUID) -> bytes:
        if self.failure is not None:
            raise self.failure
        if order_id != ORDER_ID or self.missing:
            self.missing -= 1
            self.arrivals.land()  # it lands just after this look: the waiter is woken
            raise OrderNotFound(f"no buy order has id {order_id}")
        return ORDER


@pytest.fixture
def arrivals() -> FakeArrivals:
    return FakeArrivals()


@pytest.fixture
def read_model(arrivals: FakeArrivals) -> FakeReadModel:
    return FakeReadModel(arrivals)


def app_with(read_model: FakeReadModel, arrivals: FakeArrivals) -> FastAPI:
    app = create_app(SETTINGS)
    app.state.adapters = SimpleNamespace(read_model=read_model, arrivals=arrivals)
    return app


@pytest.fixture
def client(read_model: FakeReadModel, arrivals: FakeArrivals) -> TestClient:
    return TestClient(app_with(read_model, arrivals))


def test_a_page_is_the_read_models_body_with_the_query_it_asked_for(
    client: TestClient, read_model: FakeReadModel
) -> None:
    response = client.get("/buy_orders", params=[("page_size", "5"), ("currency", "USD"), ("currency", "EUR")])
    assert response.status_code == 200
    assert response.content == b'{"buy_orders":[]}'
    assert response.headers["content-type"] == "application/json"
    assert "link" not in response.headers
    [query] = read_model.queries
    assert (query.page_size, query.currencies, query.last_reference) == (5, ("EUR", "USD"), None)


def test_the_link_header_names_the_older_and_newer_pages(client: TestClient, read_model: FakeReadModel) -> None:
    first, last = str(uuid.uuid4()), str(uuid.uuid4())
    read_model.page = PageBody(b"{}", first, last, has_more=True, has_other_side=True)
    response = client.get("/buy_orders", params={"page_size": "2", "last_reference": str(uuid.uuid4())})
    assert response.headers["link"] == (
        f'</buy_orders?page_size=2&last_reference={last}>; rel="next", '
        f'</buy_orders?page_size=2&first_reference={first}>; rel="prev"'
    )


def test_both_references_are_a_422_naming_first_reference(client: TestClient, read_model: FakeReadModel) -> None:
    response = client.get(
        "/buy_orders", params={"last_reference": str(uuid.uuid4()), "first_reference": str(uuid.uuid4())}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "first_reference"]
    assert read_model.queries == []


@pytest.mark.parametrize(
    "params", [{"page_size": "0"}, {"page_size": "1001"}, {"currency": "XXX"}, {"created_gte": "2026-11-24T12:00:00"}]
)
def test_malformed_parameters_are_422(client: TestClient, params: dict[str, str]) -> None:
    assert client.get("/buy_orders", params=params).status_code == 422


def test_an_unknown_reference_is_404_unknown_reference(client: TestClient, read_model: FakeReadModel) -> None:
    read_model.failure = UnknownReference("no order has id x")
    response = client.get("/buy_orders", params={"last_reference": str(uuid.uuid4())})
    assert response.status_code == 404
    assert response.json()["detail"]["code"] == "unknown_reference"


def test_a_read_model_outage_is_503_with_retry_after(client: TestClient, read_model: FakeReadModel) -> None:
    read_model.failure = ServiceUnavailable("the read model is unavailable")
    for path in ("/buy_orders", f"/buy_orders/{ORDER_ID}"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.json()["detail"]["code"] == "service_unavailable"
        assert response.headers["retry-after"] == "1"


def test_one_order_is_its_stored_document(client: TestClient, arrivals: FakeArrivals) -> None:
    response = client.get(f"/buy_orders/{ORDER_ID}")
    assert (response.status_code, response.content) == (200, ORDER)
    assert arrivals.waited_for == []  # no Prefer: no wait registered


def test_an_unknown_order_is_404_at_once_without_prefer(client: TestClient) -> None:
    response = client.get(f"/buy_orders/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["detail"]["code"] == "order_not_found"
    assert "retry-after" not in response.headers and "preference-applied" not in response.headers


def test_a_malformed_id_is_422(client: TestClient) -> None:
    assert client.get("/buy_orders/not-a-uuid").status_code == 422


def test_prefer_wait_answers_as_soon_as_the_order_lands(client: TestClient, read_model: FakeReadModel) -> None:
    read_model.missing = 1
    response = client.get(f"/buy_orders/{ORDER_ID}", headers={"Prefer": "wait=60"})
    assert (response.status_code, response.content) == (200, ORDER)
    assert response.headers["preference-applied"] == "wait=5"  # capped at READ_YOUR_WRITE_MAX_WAIT_SECONDS


def test_prefer_wait_without_a_wait_on_offer_is_answered_at_once(client: TestClient, arrivals: FakeArrivals) -> None:
    arrivals.offers = False
    response = client.get(f"/buy_orders/{uuid.uuid4()}", headers={"Prefer": "wait=5"})
    assert response.status_code == 404
    assert "preference-applied" not in response.headers


def test_dependency_overrides_serve_every_request(arrivals: FakeArrivals) -> None:
    app = create_app(SETTINGS)  # no adapters in app.state: only the override provides them
    resolved: list[object] = []
    adapters = SimpleNamespace(read_model=FakeReadModel(arrivals), arrivals=arrivals)

    def overridden() -> object:
        resolved.append(object())
        return adapters

    app.dependency_overrides[deps.get_adapters] = overridden
    client = TestClient(app)
    reference = str(uuid.uuid4())
    for params in ({}, {"page_size": "5"}, {"page_size": "5", "last_reference": reference}, {"currency": "USD"}):
        assert client.get("/buy_orders", params=params).status_code == 200
    assert client.get(f"/buy_orders/{ORDER_ID}").content == ORDER
    assert len(resolved) == 5
