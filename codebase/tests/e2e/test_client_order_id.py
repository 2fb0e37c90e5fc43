"""`client_order_id` (SPEC 3.1, 3.3) end to end: taken by the create API, carried by the event,
served by the read model, compared on a replay; `null` for an order placed without one."""

import uuid

import httpx

from tests.e2e.conftest import Suite


def test_a_client_order_id_goes_from_the_put_to_the_read_model_and_binds_the_key(suite: Suite) -> None:
    suite.start("btc_price")
    create = suite.start("create_buy_order", PUBLIC_FETCH_URL="").url
    fetch = suite.start("fetch_buy_orders").url
    suite.start("outbox_relay", wait=False)
    suite.start("read_model_sync", wait=False)

    body = {"currency": "USD", "amount": "10.00", "idempotence_key": str(uuid.uuid4()), "client_order_id": "shop-42/A"}
    placed = httpx.put(f"{create}/buy_order", json=body, timeout=10)
    assert placed.status_code == 201, placed.text
    assert placed.json()["client_order_id"] == "shop-42/A"
    assert placed.content.endswith(b',"client_order_id":"shop-42/A"}')

    served = httpx.get(f"{fetch}{placed.headers['location']}", headers={"Prefer": "wait=10"}, timeout=15)
    assert served.status_code == 200, served.text
    assert served.content == placed.content, "the read model serves the answer's bytes"

    replayed = httpx.put(f"{create}/buy_order", json=body, timeout=10)
    assert (replayed.status_code, replayed.content) == (200, placed.content)
    for other in ("shop-42/B", None):
        reused = httpx.put(f"{create}/buy_order", json={**body, "client_order_id": other}, timeout=10)
        assert reused.status_code == 422, reused.text
        assert reused.json()["detail"]["code"] == "idempotence_key_reused"

    refused = httpx.put(f"{create}/buy_order", json={**body, "client_order_id": "x" * 65}, timeout=10)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "client_order_id"]

    without = httpx.put(
        f"{create}/buy_order", json={"currency": "EUR", "amount": "5", "idempotence_key": str(uuid.uuid4())}, timeout=10
    )
    assert without.status_code == 201
    assert without.json()["client_order_id"] is None
    assert httpx.get(f"{fetch}{without.headers['location']}", headers={"Prefer": "wait=10"}, timeout=15).content == (
        without.content
    )

    page = httpx.get(f"{fetch}/buy_orders", timeout=10)
    assert page.status_code == 200
    assert [order["client_order_id"] for order in page.json()["buy_orders"]] == [None, "shop-42/A"]
    assert page.content.startswith(b'{"buy_orders":[' + without.content + b"," + placed.content + b"]")
