"""create_buy_order's routes in process: the HTTP key rules and every error's status and shape.

The app is built as it serves (`create_app` does no I/O) with the in-memory ports as its adapters;
`test_place_buy_order` covers the rules behind them.
"""

import asyncio
import json
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from btc_orders.services.create_buy_order import deps
from btc_orders.services.create_buy_order.app import create_app
from btc_orders.settings import CreateBuyOrderSettings
from tests.unit.fakes import FakeLedger, FakeOrderStore, FakeRates

SETTINGS = CreateBuyOrderSettings(
    WRITE_MODEL_DB_URL="postgresql://nowhere/write", BTC_PRICE_URL="http://127.0.0.1:9", PUBLIC_FETCH_URL=""
)


@dataclass
class Ports:
    rates: FakeRates = field(default_factory=lambda: FakeRates(USD="50000", EUR="40000", GBP="35000"))
    orders: FakeOrderStore = field(default_factory=lambda: FakeOrderStore(cap_btc="0.003"))


def app_with(ports: Ports, settings: CreateBuyOrderSettings = SETTINGS) -> FastAPI:
    app = create_app(settings)
    app.state.adapters = FakeAdapters(ports.orders, ports.rates)  # what the lifespan would set
    return app


@pytest.fixture
def ports() -> Ports:
    return Ports()


@pytest.fixture
def client(ports: Ports) -> Iterator[TestClient]:
    yield TestClient(app_with(ports))  # no lifespan: nothing is connected to


def put(client: TestClient, amount: object = "100", key: object = None, **headers: str) -> httpx.Response:
    body: dict[str, object] = {"currency": "USD", "amount": amount}
    if key is not None:
        body["idempotence_key"] = str(key)
    response: httpx.Response = client.put("/buy_order", json=body, headers=headers)
    return response


def test_a_new_order_is_201_with_the_resource_and_its_location(client: TestClient) -> None:
    key = uuid.uuid4()
    response = put(client, "100", key)
    assert response.status_code == 201
    order = response.json()
    assert order["idempotence_key"] == str(key)
    assert (order["currency"], order["amount"], order["exchange_rate"]) == ("USD", "100.00", "50000")
    assert order["bitcoin_amount"] == "0.00200000"
    assert response.headers["location"] == f"/buy_orders/{order['id']}"
    assert "idempotent-replayed" not in response.headers


def test_the_location_is_absolute_under_public_fetch_url(ports: Ports) -> None:
    settings = SETTINGS.model_copy(update={"public_fetch_url": "http://localhost:8778"})
    response = put(TestClient(app_with(ports, settings)), "1", uuid.uuid4())
    assert response.headers["location"] == f"http://localhost:8778/buy_orders/{response.json()['id']}"


def test_a_replay_is_200_with_the_same_bytes_and_idempotent_replayed(client: TestClient, ports: Ports) -> None:
    key = uuid.uuid4()
    first = put(client, "100", key)
    ports.rates.down = True  # a replay needs no rate
    again = put(client, 100, key)  # a JSON number for the same amount
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize("header", ["{key}", '"{key}"'])
def test_the_key_may_come_in_the_header_bare_or_quoted(client: TestClient, header: str) -> None:
    key = uuid.uuid4()
    response = put(client, "1", None, **{"Idempotency-Key": header.format(key=key)})
    assert response.status_code == 201
    assert response.json()["idempotence_key"] == str(key)


def test_the_same_key_in_header_and_body_is_one_key(client: TestClient) -> None:
    key = uuid.uuid4()
    assert put(client, "1", key, **{"Idempotency-Key": str(key)}).status_code == 201


def test_a_header_key_that_differs_from_the_body_key_is_400_and_nothing_is_stored(
    client: TestClient, ports: Ports
) -> None:
    rejected = REGISTRY.get_sample_value("buy_orders_rejected_total", {"code": "idempotence_key_conflict"}) or 0.0
    response = put(client, "1", uuid.uuid4(), **{"Idempotency-Key": str(uuid.uuid4())})
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "idempotence_key_conflict"
    assert REGISTRY.get_sample_value("buy_orders_rejected_total", {"code": "idempotence_key_conflict"}) == rejected + 1
    assert ports.orders.by_key == {} and ports.rates.asked == []


def test_no_key_anywhere_is_fastapis_422_naming_idempotence_key(client: TestClient, ports: Ports) -> None:
    response = put(client, "1")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("missing", ["body", "idempotence_key"])
    assert "Idempotency-Key header" in error["msg"]
    assert ports.rates.asked == []


def test_a_key_reused_with_another_amount_is_422_idempotence_key_reused(client: TestClient) -> None:
    key = uuid.uuid4()
    put(client, "100", key)
    response = put(client, "100.01", key)
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "idempotence_key_reused"
    assert set(response.json()["detail"]) == {"code", "message"}


def test_over_the_cap_is_409_with_the_btc_still_available(client: TestClient) -> None:
    put(client, "100", uuid.uuid4())
    response = put(client, "100", uuid.uuid4())
    assert response.status_code == 409
    assert response.json()["detail"] | {"message": ""} == {
        "code": "btc_cap_exceeded",
        "message": "",
        "requested_btc": "0.00200000",
        "available_btc": "0.00100000",
    }
    assert "retry-after" not in response.headers


def test_over_the_cap_with_the_key_in_flight_is_409_order_in_flight_with_retry_after(client: TestClient) -> None:
    from btc_orders.services.create_buy_order.handler import IN_FLIGHT

    key = uuid.uuid4()
    put(client, "100", uuid.uuid4())
    with IN_FLIGHT.placing(key):  # another request of this process is pricing this key
        response = put(client, "100", key)
    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "order_in_flight"
    assert response.headers["retry-after"] == "1"


def test_no_rate_is_503_rate_unavailable_with_retry_after(client: TestClient, ports: Ports) -> None:
    ports.rates.down = True
    response = put(client, "1", uuid.uuid4())
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "rate_unavailable"
    assert response.headers["retry-after"] == "1"
    assert ports.orders.by_key == {}


@pytest.mark.parametrize(
    "body",
    [{"currency": "XXX", "amount": "1"}, {"currency": "USD", "amount": "1.001"}, {"currency": "USD", "amount": "0"}],
)
def test_invalid_input_is_422_naming_the_field(client: TestClient, body: dict[str, str]) -> None:
    response = client.put("/buy_order", json={**body, "idempotence_key": str(uuid.uuid4())})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "currency" if body["currency"] == "XXX" else "amount"]


# `client_order_id` (SPEC 3.1): optional, printable ASCII, 1 to 64 characters.


@pytest.mark.parametrize(
    "reference", ["x" * 64, "a", " ", "shop-42/A", "".join(chr(c) for c in range(0x20, 0x7F))[:64]]
)
def test_a_client_order_id_of_1_to_64_printable_ascii_characters_is_stored_and_returned(
    client: TestClient, ports: Ports, reference: str
) -> None:
    key = uuid.uuid4()
    response = client.put(
        "/buy_order", json={"currency": "USD", "amount": "1", "idempotence_key": str(key), "client_order_id": reference}
    )
    assert response.status_code == 201, response.text
    assert list(response.json())[-2:] == ["idempotence_key", "client_order_id"]
    assert response.json()["client_order_id"] == reference
    assert ports.orders.by_key[key].client_order_id == reference


@pytest.mark.parametrize("body", [{}, {"client_order_id": None}], ids=["absent", "null"])
def test_an_order_without_a_client_order_id_shows_null(client: TestClient, body: dict[str, None]) -> None:
    response = client.put(
        "/buy_order", json={"currency": "USD", "amount": "1", "idempotence_key": str(uuid.uuid4()), **body}
    )
    assert response.status_code == 201
    assert response.content.endswith(b',"client_order_id":null}')


@pytest.mark.parametrize(
    "reference",
    ["x" * 65, "", "é", "shop-\U0001f600", "tab\there", "line\n", "\x7f", "nul\x00", 42, ["a"]],
    ids=["65 characters", "empty", "non-ASCII", "astral", "tab", "newline", "DEL", "NUL", "number", "list"],
)
def test_any_other_client_order_id_is_422_naming_it_and_nothing_is_stored(
    client: TestClient, ports: Ports, reference: object
) -> None:
    body = {"currency": "USD", "amount": "1", "idempotence_key": str(uuid.uuid4()), "client_order_id": reference}
    response = client.put("/buy_order", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "client_order_id"]
    assert ports.orders.by_key == {}


@pytest.mark.parametrize(
    ("first", "again"),
    [("shop-42/A", "shop-42/B"), ("shop-42/A", None), (None, "shop-42/A"), ("a", "A")],
    ids=["another", "with then without", "without then with", "case"],
)
def test_a_key_replayed_with_another_client_order_id_is_idempotence_key_reused(
    client: TestClient, ports: Ports, first: str | None, again: str | None
) -> None:
    key = str(uuid.uuid4())
    body = {"currency": "USD", "amount": "1", "idempotence_key": key}
    assert client.put("/buy_order", json={**body, "client_order_id": first}).status_code == 201
    response = client.put("/buy_order", json={**body, "client_order_id": again})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["code"] == "idempotence_key_reused"
    assert len(ports.orders.by_key) == 1


def test_a_key_replayed_with_the_same_client_order_id_is_the_same_order(client: TestClient) -> None:
    body = {"currency": "USD", "amount": "1", "idempotence_key": str(uuid.uuid4()), "client_order_id": "shop-42/A"}
    first = client.put("/buy_order", json=body)
    again = client.put("/buy_order", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.content == first.content


def test_another_content_type_is_415(client: TestClient) -> None:
    response = client.put("/buy_order", content=b"currency=USD", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["detail"]["code"] == "unsupported_media_type"


def test_capacity_reports_the_cap_what_is_used_and_what_is_left(client: TestClient) -> None:
    put(client, "100", uuid.uuid4())
    response = client.get("/capacity")
    assert response.status_code == 200
    assert response.json() == {"cap_btc": "0.00300000", "used_btc": "0.00200000", "available_btc": "0.00100000"}


def test_capacity_before_the_ledger_exists_is_the_setting_with_nothing_available(ports: Ports) -> None:
    app = app_with(ports)
    app.state.adapters.ledger.exists = False
    response = TestClient(app).get("/capacity")
    assert response.json() == {"cap_btc": "100.00000000", "used_btc": "100.00000000", "available_btc": "0.00000000"}


def test_the_adapters_are_resolved_through_fastapis_dependencies_for_every_request(ports: Ports) -> None:
    app = app_with(ports)
    resolved: list[object] = []

    def adapters_of_the_route() -> FakeAdapters:  # what FastAPI's dependency solving asks for
        resolved.append(object())
        return FakeAdapters(ports.orders, ports.rates)

    app.dependency_overrides[deps.get_adapters] = adapters_of_the_route
    client = TestClient(app)
    key = uuid.uuid4()
    assert put(client, "1", key).status_code == 201
    assert put(client, "1", None, **{"Idempotency-Key": f'"{key}"'}).status_code == 200
    assert client.get("/capacity").status_code == 200
    assert len(resolved) == 3


_Value = TypeVar("_Value")


def mostly(good: list[_Value], bad: list[_Value]) -> st.SearchStrategy[_Value]:
    """One of `good` two times in three, else one of `bad`: whole well-formed requests stay common."""
    return st.sampled_from(good) | st.sampled_from(good) | st.sampled_from(bad)


# What a client might send: each part well formed more often than not (so that whole orders are
# common), or one of the ways it can be wrong; a header key that agrees with the body's or not;
# the media types.
_KEY = "5fa733ae-82b4-4ac0-8478-35ff30dae879"
_OTHER_KEY = "0b4c2a7e-1d2f-4e3a-9b8c-7d6e5f4a3b2c"


_BODY = st.fixed_dictionaries(
    {
        "currency": mostly(["USD", "EUR", "GBP"], ["XXX", "usd", "", 1, None, ["USD"]]),
        "amount": mostly(
            ["100", "1.5", "0.01", "150.01", 100, 1.5], ["0", "-1", "1.001", "1e3", " 1", 1e3, True, None]
        ),
    },
    optional={
        "idempotence_key": mostly([_KEY, _OTHER_KEY], [_KEY.replace("-", ""), _KEY.upper(), "nope", 1, None]),
        "extra": st.just("x"),
    },
)
_BODIES = _BODY.map(lambda body: json.dumps(body).encode()) | st.sampled_from(
    [b"", b"{", b"[]", b"null", b'"USD"', b'{"currency": "USD", "currency": "USD", "amount": "1"}', b"\xff"]
)
_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "idempotency-key": mostly([_KEY, f'"{_KEY}"', _OTHER_KEY], ["nope", '"nope', ""]),
        "content-type": mostly(["application/json", "application/json; charset=utf-8"], ["text/plain", ""]),
    },
)
# Every answer of PUT /buy_order that the request alone decides, and the shape of each.
_CLIENT_ERRORS = {400, 409, 415, 422}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(st.tuples(_BODIES, _HEADERS), min_size=1, max_size=3))
def test_generated_requests_are_answered_as_documented_never_with_a_500(
    requests: list[tuple[bytes, dict[str, str]]],
) -> None:
    ports = Ports()
    client = TestClient(app_with(ports))
    for body, headers in requests:  # in turn: a later request may replay or reuse an earlier key
        response = client.put("/buy_order", content=body, headers=headers)
        document = response.json()
        if response.status_code in (200, 201):
            stored = ports.orders.by_key[uuid.UUID(document["idempotence_key"])]
            assert document == stored.resource(), (body, headers)
            assert (response.headers.get("idempotent-replayed") == "true") == (response.status_code == 200)
        elif response.status_code == 422 and isinstance(document["detail"], list):
            assert all(error["loc"][0] == "body" or error["loc"][0] == "header" for error in document["detail"])
        else:
            assert response.status_code in _CLIENT_ERRORS, (body, headers, response.status_code, document)
            assert set(document["detail"]) >= {"code", "message"}


@dataclass
class FakeAdapters:
    """What a bootstrap of fakes gives the lifespan: the app started, probed and closed without I/O."""

    orders: FakeOrderStore
    prices: FakeRates
    ledger: FakeLedger = field(init=False)
    ready: bool = True
    closed: bool = False

    def __post_init__(self) -> None:
        self.ledger = FakeLedger(self.orders)

    async def start(self) -> None:
        pass

    async def readiness(self) -> dict[str, bool]:
        return {"write_model": self.ready, "btc_price": True}

    async def close(self) -> None:
        self.closed = True


def test_the_lifespan_builds_the_adapters_the_routes_and_probes_use_and_closes_them(ports: Ports) -> None:
    adapters = FakeAdapters(ports.orders, ports.rates)
    built: list[CreateBuyOrderSettings] = []

    async def bootstrap(settings: CreateBuyOrderSettings) -> FakeAdapters:
        built.append(settings)
        return adapters

    app = create_app(SETTINGS, bootstrap)
    assert built == []  # creating the app builds nothing
    with TestClient(app) as client:
        assert built == [SETTINGS]
        assert put(client, "1", uuid.uuid4()).status_code == 201
        assert client.get("/readyz").json() == {"status": "ok", "checks": {"write_model": True, "btc_price": True}}
        adapters.ready = False
        assert client.get("/readyz").status_code == 503
    assert adapters.closed


def test_a_bootstrap_that_fails_is_one_line_exit_status_3_and_no_traceback_for_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def bootstrap(_settings: CreateBuyOrderSettings) -> FakeAdapters:
        raise ConnectionRefusedError("the write model is far away")

    app = create_app(SETTINGS, bootstrap)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, object]:
        return {"type": "lifespan.startup"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def start() -> None:  # what uvicorn does with the app at start
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    with pytest.raises(SystemExit) as stopped:
        asyncio.run(start())
    assert stopped.value.code == 3
    assert capsys.readouterr().err.splitlines() == [
        "refusing to start: create_buy_order failed at start: ConnectionRefusedError: the write model is far away"
    ]
    assert sent == [{"type": "lifespan.startup.failed", "message": ""}]  # the server logs no traceback
