"""PUT /buy_order end to end: real processes, real Postgres, Coinbase played on loopback."""

import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text

from btc_orders.adapters import db
from tests.e2e.conftest import Suite
from tests.support.fake_coinbase import FAULTS
from tests.support.services import admin_connection


def put(url: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.put(f"{url}/buy_order", json=body, timeout=10, **kwargs)  # type: ignore[arg-type]


def stored_orders(suite: Suite, key: str | None = None) -> list[dict[str, object]]:
    engine = db.create_engine(suite.databases.write_url, 1)
    with engine.connect() as connection:
        rows = (
            connection.execute(
                text(
                    "SELECT * FROM buy_order WHERE CAST(:key AS uuid) IS NULL OR idempotence_key = :key"
                    " ORDER BY sequence"
                ),
                {"key": key},
            )
            .mappings()
            .all()
        )
    engine.dispose()
    return [dict(row) for row in rows]


@pytest.fixture(scope="module")
def api(shared_suite: Suite) -> str:
    shared_suite.start("btc_price")
    return shared_suite.start("create_buy_order").url


def test_the_original_curl_order_is_stored_and_priced_to_the_satoshi(api: str) -> None:
    key = "5fa733ae-82b4-4ac0-8478-35ff30dae879"
    response = put(api, {"currency": "USD", "amount": "123.45", "idempotence_key": key})
    assert response.status_code == 201, response.text
    order = response.json()
    assert response.headers["location"] == f"/buy_orders/{order['id']}"
    assert order["bitcoin_amount"] == "0.00127252"
    assert order["exchange_rate"] == "97012.34"
    assert order["amount"] == "123.45"
    assert order["currency"] == "USD"
    assert order["idempotence_key"] == key
    assert order["created_at"].endswith("Z")


def test_the_same_request_again_replays_the_same_order_byte_for_byte(api: str) -> None:
    body = {"currency": "EUR", "amount": "10.5", "idempotence_key": str(uuid.uuid4())}
    first = put(api, body)
    again = put(api, {**body, "amount": 10.50})  # the same amount as an exact JSON number
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


def test_the_same_key_with_another_amount_or_currency_is_refused(api: str, shared_suite: Suite) -> None:
    key = str(uuid.uuid4())
    assert put(api, {"currency": "GBP", "amount": "20.00", "idempotence_key": key}).status_code == 201
    for other in ({"currency": "GBP", "amount": "20.01"}, {"currency": "USD", "amount": "20.00"}):
        refused = put(api, {**other, "idempotence_key": key})
        assert refused.status_code == 422
        assert refused.json()["detail"]["code"] == "idempotence_key_reused"
    assert len(stored_orders(shared_suite, key)) == 1


def test_the_key_may_come_in_the_idempotency_key_header(api: str) -> None:
    key = str(uuid.uuid4())
    response = put(api, {"currency": "USD", "amount": "5.00"}, headers={"Idempotency-Key": key})
    assert response.status_code == 201
    assert response.json()["idempotence_key"] == key
    same = put(api, {"currency": "USD", "amount": "5.00", "idempotence_key": key}, headers={"Idempotency-Key": key})
    assert same.status_code == 200


def test_header_and_body_keys_that_differ_are_a_400(api: str, shared_suite: Suite) -> None:
    body_key, header_key = str(uuid.uuid4()), str(uuid.uuid4())
    response = put(
        api, {"currency": "USD", "amount": "5.00", "idempotence_key": body_key}, headers={"Idempotency-Key": header_key}
    )
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "idempotence_key_conflict"
    assert stored_orders(shared_suite, body_key) == stored_orders(shared_suite, header_key) == []


@pytest.mark.parametrize(
    ("raw_body", "field"),
    [
        ('{"currency": "USD", "amount": "1e3", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": 1e3, "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": "NaN", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": "-1", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": "0", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": "0.001", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": 0.001, "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": "1000000000", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": 1e-7, "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": "' + "9" * 400 + '", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": "", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "amount": ["1"], "idempotence_key": "%s"}', "amount"),
        ('{"currency": "USD", "idempotence_key": "%s"}', "amount"),
        ('{"currency": "XXX", "amount": "1.00", "idempotence_key": "%s"}', "currency"),
        ('{"currency": "usd", "amount": "1.00", "idempotence_key": "%s"}', "currency"),
        ('{"currency": "USD", "amount": "1.00", "idempotence_key": "not-a-uuid"}', "idempotence_key"),
        ('{"currency": "USD", "amount": "1.00"}', "idempotence_key"),
        ('{"currency": "USD", "amount": "1.00", "idempotence_key": "%s", "amout": 1}', "amout"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(api: str, shared_suite: Suite, raw_body: str, field: str) -> None:
    key = str(uuid.uuid4())
    body = raw_body.replace("%s", key)
    response = httpx.put(f"{api}/buy_order", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert any(error["loc"][-1] == field for error in response.json()["detail"]), response.text
    assert stored_orders(shared_suite, key) == []


@pytest.mark.parametrize("raw_body", ['{"currency": "USD", "amount": NaN}', "[1, 2]", "{", '"x"', ""])
def test_malformed_json_is_a_422_not_a_500(api: str, raw_body: str) -> None:
    response = httpx.put(f"{api}/buy_order", content=raw_body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text


def test_a_body_over_the_size_limit_is_a_413(api: str) -> None:
    response = httpx.put(f"{api}/buy_order", content=b"{" + b" " * 100_000 + b"}")
    assert response.status_code == 413
    assert response.json()["detail"]["code"] == "payload_too_large"


def test_an_order_above_what_the_cap_leaves_is_a_409_with_the_btc_available(suite: Suite) -> None:
    suite.start("btc_price")
    api = suite.start("create_buy_order", BTC_CAP="0.01").url
    # 0.01 BTC at 97012.34 USD is about 970 USD
    first = put(api, {"currency": "USD", "amount": "900.00", "idempotence_key": str(uuid.uuid4())})
    assert first.status_code == 201
    refused = put(api, {"currency": "USD", "amount": "100.00", "idempotence_key": str(uuid.uuid4())})
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail["code"] == "btc_cap_exceeded"
    assert Decimal(detail["available_btc"]) == Decimal("0.01") - Decimal(first.json()["bitcoin_amount"])
    assert detail["requested_btc"] == "0.00103080"
    assert "available" in detail["message"]


@pytest.mark.parametrize("fault", FAULTS)
def test_every_upstream_fault_is_a_503_that_stores_nothing_and_leaves_the_key_usable(suite: Suite, fault: str) -> None:
    suite.coinbase.set(fault)
    suite.start("btc_price", RATE_TTL_SECONDS="0.2", RATE_MAX_AGE_SECONDS="0.5", COINBASE_TIMEOUT_SECONDS="0.5")
    api = suite.start("create_buy_order", RATE_MAX_AGE_SECONDS="0.5").url
    body = {"currency": "USD", "amount": "50.00", "idempotence_key": str(uuid.uuid4())}
    refused = put(api, body)
    assert refused.status_code == 503, refused.text
    assert refused.json()["detail"]["code"] == "rate_unavailable"
    assert int(refused.headers["retry-after"]) >= 1
    assert stored_orders(suite) == []

    suite.coinbase.set("healthy")
    time.sleep(0.3)  # the failure is remembered for one TTL
    accepted = put(api, body)
    assert accepted.status_code == 201, accepted.text
    assert len(stored_orders(suite)) == 1


def test_btc_price_answers_503_for_a_rate_older_than_the_maximum_age(suite: Suite) -> None:
    price = suite.start("btc_price", RATE_TTL_SECONDS="0.2", RATE_MAX_AGE_SECONDS="0.6")
    assert httpx.get(f"{price.url}/btc_price/GBP").json()["rate"] == "78901.23"
    suite.coinbase.set("error500")
    time.sleep(0.3)
    stale_but_young = httpx.get(f"{price.url}/btc_price/GBP")
    assert stale_but_young.status_code == 200  # younger than the maximum age: still served
    time.sleep(0.5)
    too_old = httpx.get(f"{price.url}/btc_price/GBP")
    assert too_old.status_code == 503
    assert too_old.json()["detail"]["code"] == "rate_unavailable"


def test_btc_price_refuses_unsupported_currencies(suite: Suite) -> None:
    price = suite.start("btc_price")
    assert httpx.get(f"{price.url}/btc_price/XXX").status_code == 422


def test_concurrent_creates_share_one_upstream_call_per_currency_per_ttl(suite: Suite) -> None:
    suite.start("btc_price", RATE_TTL_SECONDS="30")
    api = suite.start("create_buy_order").url
    currencies = ["EUR", "GBP", "USD"]

    def create(index: int) -> int:
        body = {"currency": currencies[index % 3], "amount": "1.00", "idempotence_key": str(uuid.uuid4())}
        return put(api, body).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = Counter(pool.map(create, range(200)))
    assert statuses == {201: 200}
    assert suite.coinbase.calls == {"EUR": 1, "GBP": 1, "USD": 1}


@pytest.mark.parametrize("round_", range(3))
def test_racing_two_replicas_never_exceeds_the_cap(suite: Suite, round_: int) -> None:
    suite.start("btc_price")
    replicas = [suite.start("create_buy_order", BTC_CAP="0.01").url for _ in range(2)]
    start = threading.Barrier(64)
    amounts = [f"{(i * 7 + round_) % 30 + 20}.00" for i in range(64)]  # 20..49 USD

    def create(index: int) -> httpx.Response:
        body = {"currency": "USD", "amount": amounts[index], "idempotence_key": str(uuid.uuid4())}
        start.wait()
        return put(replicas[index % 2], body)

    with ThreadPoolExecutor(64) as pool:
        responses = list(pool.map(create, range(64)))
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {201, 409}, statuses
    orders = stored_orders(suite)
    total = sum(Decimal(order["bitcoin_amount"]) for order in orders)  # type: ignore[arg-type]
    assert len(orders) == statuses[201]
    assert total <= Decimal("0.01")
    left = Decimal("0.01") - total
    for response in responses:
        if response.status_code == 409:
            # refused only because it really did not fit what is left at the end
            assert Decimal(response.json()["detail"]["requested_btc"]) > left


def test_the_same_key_sent_32_times_at_once_makes_one_order(api: str, shared_suite: Suite) -> None:
    body = {"currency": "USD", "amount": "77.00", "idempotence_key": str(uuid.uuid4())}
    start = threading.Barrier(32)

    def create(_: int) -> httpx.Response:
        start.wait()
        return put(api, body)

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(create, range(32)))
    statuses = Counter(response.status_code for response in responses)
    assert statuses[201] == 1
    assert set(statuses) <= {200, 201, 409}
    ids = {response.json()["id"] for response in responses if response.status_code in (200, 201)}
    assert len(ids) == 1
    assert len(stored_orders(shared_suite, body["idempotence_key"])) == 1


def test_health_readiness_and_openapi(suite: Suite) -> None:
    suite.start("btc_price")
    api = suite.start("create_buy_order").url
    assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{api}/readyz").status_code == 200
    assert httpx.get(f"{api}/docs").status_code == 200
    spec = httpx.get(f"{api}/openapi.json").json()
    assert "/buy_order" in spec["paths"]
    suite.service("btc_price").stop()
    not_ready = httpx.get(f"{api}/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"] == {"write_model": True, "btc_price": False}


def test_a_request_id_is_returned_and_made_when_missing(api: str) -> None:
    given = put(
        api,
        {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())},
        headers={"X-Request-ID": "trace-me-123"},
    )
    assert given.headers["x-request-id"] == "trace-me-123"
    made = put(api, {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())})
    assert len(made.headers["x-request-id"]) == 32


def test_a_write_model_outage_is_a_503_and_nothing_half_stored(suite: Suite) -> None:
    suite.start("btc_price")
    api = suite.start("create_buy_order").url
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {suite.databases.write_name} ALLOW_CONNECTIONS false")
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (suite.databases.write_name,),
        )
    try:
        response = put(api, {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())})
        assert response.status_code == 503
        assert response.json()["detail"]["code"] == "service_unavailable"
        assert "retry-after" in response.headers
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {suite.databases.write_name} ALLOW_CONNECTIONS true")
        connection.close()
    recovered = put(api, {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())})
    assert recovered.status_code == 201


def test_connections_the_server_closed_while_idle_cost_no_order(suite: Suite) -> None:
    """A restart, a failover or an idle-session reaper ends every connection the service holds; the
    database is healthy again at once: every next order is stored, none answered 503."""
    suite.start("btc_price")
    api = suite.start("create_buy_order").url
    for _ in range(5):
        assert put(api, {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())}).status_code == 201
    with admin_connection() as connection:
        ended = connection.execute(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'create_buy_order'",
            (suite.databases.write_name,),
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    time.sleep(2)
    answers = [
        put(api, {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())}).status_code
        for _ in range(40)
    ]
    assert answers == [201] * 40


def test_a_replay_is_answered_while_no_rate_can_be_had(suite: Suite) -> None:
    fast = {"RATE_TTL_SECONDS": "0.2", "RATE_MAX_AGE_SECONDS": "0.5"}
    suite.start("btc_price", **fast)
    api = suite.start("create_buy_order", **fast).url
    body = {"currency": "USD", "amount": "64.00", "idempotence_key": str(uuid.uuid4())}
    first = put(api, body)
    assert first.status_code == 201
    suite.coinbase.set("error500")
    time.sleep(0.6)
    assert put(api, {**body, "idempotence_key": str(uuid.uuid4())}).status_code == 503
    replay = put(api, body)
    assert replay.status_code == 200
    assert replay.content == first.content


def test_btc_price_answers_a_parser_bomb_with_a_remembered_503_and_the_last_good_rate(suite: Suite) -> None:
    price = suite.start("btc_price", RATE_TTL_SECONDS="0.3", RATE_MAX_AGE_SECONDS="1.5").url
    assert httpx.get(f"{price}/btc_price/EUR").json()["rate"] == "91234.56"
    suite.coinbase.set("parser_bomb")
    time.sleep(0.4)
    young = [httpx.get(f"{price}/btc_price/EUR") for _ in range(5)]
    assert {response.status_code for response in young} == {200}  # the last good rate, still young
    assert {response.json()["rate"] for response in young} == {"91234.56"}
    time.sleep(1.5)
    calls_before, started = suite.coinbase.calls["EUR"], time.monotonic()
    refused = [httpx.get(f"{price}/btc_price/EUR") for _ in range(20)]
    elapsed = time.monotonic() - started
    assert {response.status_code for response in refused} == {503}
    assert {response.json()["detail"]["code"] for response in refused} == {"rate_unavailable"}
    assert all(int(response.headers["retry-after"]) >= 1 for response in refused)
    # the failure is remembered for the TTL: at most one upstream call per TTL, not one per request
    assert suite.coinbase.calls["EUR"] - calls_before <= 1 + elapsed / 0.3


def _order(**fields: object) -> dict[str, object]:
    return {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4()), **fields}


def test_a_key_given_twice_in_the_body_is_a_422_naming_it_and_stores_nothing(api: str, shared_suite: Suite) -> None:
    key = str(uuid.uuid4())
    body = f'{{"currency": "USD", "amount": "1.00", "idempotence_key": "{key}", "amount": "999999.00"}}'
    response = httpx.put(f"{api}/buy_order", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "amount"]
    assert error["type"] == "duplicate_key"
    assert "amount" in error["msg"]
    assert stored_orders(shared_suite, key) == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_a_body_sent_as_another_media_type_is_a_415_saying_what_to_send(api: str, content_type: str) -> None:
    body = _order()
    response = httpx.put(f"{api}/buy_order", content=json.dumps(body), headers={"Content-Type": content_type})
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert detail["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in detail["message"]


def test_a_form_is_a_415(api: str) -> None:
    response = httpx.put(
        f"{api}/buy_order", data={"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4())}
    )
    assert response.status_code == 415, response.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "application/json; charset=utf-8"}, {"Content-Type": "application/vnd.orders+json"}],
    ids=["no content type", "charset", "+json"],
)
def test_json_bodies_are_read_whatever_json_media_type_or_none(api: str, headers: dict[str, str]) -> None:
    response = httpx.put(f"{api}/buy_order", content=json.dumps(_order()).encode(), headers=headers)
    assert response.status_code == 201, response.text


def test_the_key_header_in_the_drafts_quoted_form_names_the_same_order_as_bare(api: str) -> None:
    key = str(uuid.uuid4())
    body = {"currency": "EUR", "amount": "2.00"}
    first = httpx.put(f"{api}/buy_order", json=body, headers={"Idempotency-Key": f'"{key}"'})
    assert first.status_code == 201, first.text
    assert first.json()["idempotence_key"] == key
    again = httpx.put(f"{api}/buy_order", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json() == first.json()
    both = httpx.put(f"{api}/buy_order", json={**body, "idempotence_key": key}, headers={"Idempotency-Key": f'"{key}"'})
    assert both.status_code == 200, both.text  # the same key in both forms: no conflict
    other = str(uuid.uuid4())
    conflict = httpx.put(
        f"{api}/buy_order", json={**body, "idempotence_key": other}, headers={"Idempotency-Key": f'"{key}"'}
    )
    assert conflict.status_code == 400
    assert conflict.json()["detail"]["code"] == "idempotence_key_conflict"
    malformed = httpx.put(f"{api}/buy_order", json=body, headers={"Idempotency-Key": f'"{key}'})
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
