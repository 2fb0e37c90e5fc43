"""Orders through the gateway: priced exactly at the rate the cluster's Coinbase gives,
idempotent by key, projected into the read model, paged through newest first."""

import re
import uuid
from urllib.parse import urljoin, urlsplit

import pytest

from tests.cluster.cluster import Api, ceil_to_satoshi, converge, wait_for
from tests.cluster.session import RATES, Cluster

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def test_an_order_is_created_priced_exactly_and_replayed_byte_for_byte(cluster: Cluster) -> None:
    api = cluster.api
    key = str(uuid.uuid4())
    created = api.put_order("EUR", "123.45", key)
    assert created.status_code == 201, created.text
    order = created.json()
    assert uuid.UUID(order["id"])
    assert RFC3339_UTC.fullmatch(order["created_at"]), order["created_at"]
    assert order["currency"] == "EUR"
    assert order["amount"] == "123.45"
    assert order["exchange_rate"] == RATES["EUR"]  # as the Coinbase container gave it, every digit
    assert order["bitcoin_amount"] == str(ceil_to_satoshi("123.45", RATES["EUR"]))
    assert order["idempotence_key"] == key
    assert created.headers["Location"].endswith(f"/buy_orders/{order['id']}")
    assert created.headers["X-Request-ID"]

    replayed = api.put_order("EUR", "123.45", key)
    assert replayed.status_code == 200
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.content == created.content


def test_the_bitcoin_amount_is_the_exact_quotient_rounded_up_to_the_satoshi(api: Api) -> None:
    for amount in ("1.00", "999.99", "76543.21"):
        order = api.created("EUR", amount)
        assert order["bitcoin_amount"] == str(ceil_to_satoshi(amount, RATES["EUR"])), amount
    # 0.01 EUR at 91234.5678 is 10.96... satoshis: 11 are charged, never 10.
    assert api.created("EUR", "0.01")["bitcoin_amount"] == "0.00000011"


def test_a_key_reused_for_another_order_is_refused_with_422(api: Api) -> None:
    key = str(uuid.uuid4())
    assert api.put_order("USD", "10.00", key).status_code == 201
    for currency, amount in (("USD", "10.01"), ("EUR", "10.00")):
        reused = api.put_order(currency, amount, key)
        assert reused.status_code == 422, reused.text
        assert reused.json()["detail"]["code"] == "idempotence_key_reused"
        assert isinstance(reused.json()["detail"]["message"], str)


def test_an_order_can_be_read_by_id_once_projected_and_an_unknown_id_is_404(api: Api) -> None:
    order = api.created("USD", "42.00")
    assert api.projected(order["id"]) == order

    unknown = api.get_order(str(uuid.uuid4()))
    assert unknown.status_code == 404
    assert unknown.json()["detail"]["code"] == "order_not_found"


def test_paging_with_last_reference_lists_every_order_once_newest_first(api: Api) -> None:
    mine = [api.created("GBP" if n % 3 == 0 else "USD", f"{n + 1}.{n:02d}") for n in range(20)]
    converge(api, {order["id"]: order for order in mine})

    pages = [api.page(7)]
    while pages[-1]["has_more"]:
        assert len(pages) < 100_000, "paging does not end"
        pages.append(api.page(7, pages[-1]["last_reference"]))

    listed = [order for page in pages for order in page["buy_orders"]]
    ids = [order["id"] for order in listed]
    assert len(ids) == len(set(ids)), "an order is listed twice"
    for page in pages[:-1]:
        assert len(page["buy_orders"]) == 7
        assert page["last_reference"] == page["buy_orders"][-1]["id"]
    assert 0 < len(pages[-1]["buy_orders"]) <= 7
    by_id = {order["id"]: order for order in listed}
    for order in mine:
        assert by_id[order["id"]] == order  # listed exactly as created
    positions = [ids.index(order["id"]) for order in mine]
    assert positions == sorted(positions, reverse=True), "my orders are not newest first"


def test_the_location_of_a_201_leads_to_the_order_on_the_same_origin(api: Api) -> None:
    created = api.put_order("USD", "77.70")
    assert created.status_code == 201, created.text
    order = created.json()
    location = urljoin(f"{api.create_url}/buy_order", created.headers["Location"])
    assert urlsplit(location)[:2] == urlsplit(api.create_url)[:2], location  # the same origin

    def followed() -> dict[str, object] | None:
        response = api.request("GET", location)
        if response.status_code == 404 and response.json()["detail"]["code"] == "order_not_found":
            return None  # not projected yet
        if response.status_code != 200:
            pytest.fail(f"GET {location}: {response.status_code} {response.text}", pytrace=False)
        found: dict[str, object] = response.json()
        return found

    assert wait_for(f"{location} to answer the order", followed, 60, interval=0.25) == order
