"""The public API through the gateway's single origin (the create port): paging both ways by
following the `Link` header, the filters against brute force over the unfiltered listing, the
201's `Location` followed with `Prefer: wait`, the bounded wait for an unknown order, the
capacity left, 415 for a body that is not JSON, and the quoted `Idempotency-Key` header.

Before the cap tests: its orders are small (well under a thousandth of a BTC each).
"""

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx
import pytest

from tests.cluster.cluster import REPO, Api, compose, compose_command, converge, run, setting, wait_for
from tests.cluster.session import Cluster

# 30 orders of this module: every currency, newest last
HISTORY = [("USD", "EUR", "GBP", "USD", "EUR")[n % 5] for n in range(30)]
REFERENCES = ("last_reference", "first_reference")
MOST_PAGES = 10_000  # a walk that goes on longer goes round in a circle


@pytest.fixture(scope="module")
def history(cluster: Cluster) -> Iterator[list[dict[str, Any]]]:
    """This module's orders, oldest first, each projected as created."""
    mine = [cluster.api.created(currency, f"{n + 1}.{n % 100:02d}") for n, currency in enumerate(HISTORY)]
    converge(cluster.api, {order["id"]: order for order in mine})
    yield mine


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


Page = tuple[dict[str, Any], dict[str, str]]  # a page's body and its links (rel: absolute URL)


def walk(api: Api, url: str, params: dict[str, Any], rel: str, kept: list[tuple[str, str]]) -> list[Page]:
    """The pages from `url` on, following the `Link` header's `rel` link to the end.

    Each page is checked on the way: its references are its first and last order, every link
    stays on the gateway's origin and keeps the `kept` query parameters (all but the
    references), and `has_more` is true exactly when the link of the walk's direction is there.
    """
    pages: list[Page] = []
    response = api.request("GET", url, params=params or None)  # httpx: `{}` would empty the URL's query
    while True:
        assert response.status_code == 200, f"GET {response.url}: {response.status_code} {response.text}"
        page: dict[str, Any] = response.json()
        orders = page["buy_orders"]
        assert orders, f"GET {response.url}: an empty page, yet a link led to it"
        assert (page["first_reference"], page["last_reference"]) == (orders[0]["id"], orders[-1]["id"])
        links = {str(name): urljoin(str(response.url), link["url"]) for name, link in response.links.items()}
        for link in links.values():
            assert origin(link) == origin(api.create_url), f"{link} leaves the gateway's origin"
            query = parse_qsl(urlsplit(link).query)
            assert sorted((n, v) for n, v in query if n not in REFERENCES) == kept, f"{link} does not keep {kept}"
        assert page["has_more"] == (rel in links), f"GET {response.url}: has_more {page['has_more']}, links {links}"
        pages.append((page, links))
        if rel not in links:
            return pages
        assert len(pages) < MOST_PAGES, f"following {rel} from {url} does not end"
        response = api.request("GET", links[rel])


def ids(pages: list[Page]) -> list[str]:
    return [order["id"] for page, _ in pages for order in page["buy_orders"]]


def there_and_back(api: Api, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The ids, newest first, following `next` from the newest page to the oldest; and those
    following `prev` from that oldest page back to the newest (pages put back in order)."""
    kept = sorted(
        (name, str(value))
        for name, values in params.items()
        for value in (values if isinstance(values, list) else [values])
    )
    down = walk(api, f"{api.create_url}/buy_orders", params, "next", kept)
    oldest = down[-1]
    assert ("prev" in oldest[1]) == (len(down) > 1), f"the oldest of {len(down)} page(s) links {oldest[1]}"
    up = [oldest, *(walk(api, oldest[1]["prev"], {}, "prev", kept) if len(down) > 1 else [])]
    return ids(down), ids(list(reversed(up)))


def once_each(listed: list[str], expected: list[str], walked: str) -> None:
    duplicated = [order_id for order_id, count in Counter(listed).items() if count > 1]
    assert not duplicated, f"{walked}: {len(duplicated)} order(s) listed twice, e.g. {duplicated[:3]}"
    assert listed == expected, f"{walked}: {len(listed)} orders, expected {len(expected)} (newest first)"


def created_at(order: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(order["created_at"])


def test_the_link_header_walks_every_order_once_from_the_newest_to_the_oldest_and_back(
    api: Api, history: list[dict[str, Any]]
) -> None:
    everything = [order["id"] for order in api.every_order()]  # last_reference, on the fetch port
    assert {order["id"] for order in history} <= set(everything)
    down, up = there_and_back(api, {"page_size": 7})
    once_each(down, everything, "next from the newest page")
    once_each(up, everything, "prev from the oldest page")

    newest = api.request("GET", f"{api.create_url}/buy_orders", params={"page_size": 7})
    assert "prev" not in newest.links  # nothing is newer than the newest page
    first = newest.json()["first_reference"]
    above = api.request("GET", f"{api.create_url}/buy_orders", params={"page_size": 7, "first_reference": first})
    assert above.status_code == 200, above.text
    assert (above.json()["buy_orders"], above.json()["has_more"]) == ([], False)


@pytest.mark.parametrize(
    "chosen",
    [
        {"currency": ["USD"]},
        {"currency": ["EUR", "GBP"]},
        {"created_gte": 8},
        {"created_lt": 21},
        {"created_gte": 8, "created_lt": 21},
        {"currency": ["GBP", "USD"], "created_gte": 3, "created_lt": 26},
    ],
    ids=["usd", "eur-gbp", "gte", "lt", "range", "usd-gbp-range"],
)
def test_the_filters_select_exactly_what_brute_force_over_the_listing_does_in_both_directions(
    api: Api, history: list[dict[str, Any]], chosen: dict[str, Any]
) -> None:
    # the bounds are the created_at of this module's orders, so that one is on each boundary
    params: dict[str, Any] = {"page_size": 4}
    params.update({k: history[v]["created_at"] if k.startswith("created") else v for k, v in chosen.items()})
    listing = api.every_order()
    currencies = set(params.get("currency") or ("EUR", "GBP", "USD"))
    gte = datetime.fromisoformat(params["created_gte"]) if "created_gte" in params else None
    lt = datetime.fromisoformat(params["created_lt"]) if "created_lt" in params else None
    expected = [
        order["id"]
        for order in listing
        if order["currency"] in currencies
        and (gte is None or created_at(order) >= gte)
        and (lt is None or created_at(order) < lt)
    ]
    mine = {order["id"] for order in history}
    assert len(mine & set(expected)) >= 5, "too few of this module's orders in the filter to page through"
    if "created_gte" in chosen and history[chosen["created_gte"]]["currency"] in currencies:
        assert history[chosen["created_gte"]]["id"] in expected  # at the lower bound: in
    if "created_lt" in chosen:
        assert history[chosen["created_lt"]]["id"] not in expected  # at the upper bound: out

    down, up = there_and_back(api, params)
    once_each(down, expected, f"next through {chosen}")
    once_each(up, expected, f"prev through {chosen}")


def test_the_location_of_a_201_answers_the_order_through_the_gateway_with_prefer_wait(api: Api) -> None:
    created = api.put_order("USD", "12.34")
    assert created.status_code == 201, created.text
    location = urljoin(f"{api.create_url}/buy_order", created.headers["Location"])
    assert origin(location) == origin(api.create_url), location
    # at once: the order may not be projected yet, the wait covers that
    followed = api.request("GET", location, headers={"Prefer": "wait=5"}, timeout=30)
    assert followed.status_code == 200, followed.text
    assert followed.json() == created.json()
    assert followed.headers["Preference-Applied"] == "wait=5"


def test_prefer_wait_holds_the_request_until_the_worker_projects_the_order(cluster: Cluster) -> None:
    """With the projection paused, a waiting GET stays open through the gateway and is
    answered 200 once the worker runs again."""
    api = cluster.api
    wait = int(setting("READ_YOUR_WRITE_MAX_WAIT_SECONDS", "10"))
    compose("pause", "read_model_sync", env=cluster.env)
    try:
        created = api.put_order("EUR", "23.45")
        assert created.status_code == 201, created.text
        location = urljoin(f"{api.create_url}/buy_order", created.headers["Location"])
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(api.request, "GET", location, headers={"Prefer": f"wait={wait}"}, timeout=wait + 20)
            time.sleep(wait / 4)
            assert not waiting.done(), f"answered while the worker was paused: {waiting.result().status_code}"
            compose("unpause", "read_model_sync", env=cluster.env)
            answered = waiting.result(wait + 30)
    finally:
        run([*compose_command(), "unpause", "read_model_sync"], env=cluster.env, check=False)  # if still paused
    assert answered.status_code == 200, answered.text
    assert answered.json() == created.json()
    assert answered.headers["Preference-Applied"] == f"wait={wait}"


@pytest.mark.parametrize("asked", [2, 3600], ids=["short", "above-the-cap"])
def test_prefer_wait_for_an_unknown_order_is_a_404_with_retry_after_after_the_bounded_wait(
    api: Api, asked: int
) -> None:
    honoured = min(asked, int(setting("READ_YOUR_WRITE_MAX_WAIT_SECONDS", "10")))
    started = time.monotonic()
    missing = api.request(
        "GET", f"{api.create_url}/buy_orders/{uuid.uuid4()}", headers={"Prefer": f"wait={asked}"}, timeout=honoured + 20
    )
    waited = time.monotonic() - started
    assert missing.status_code == 404, missing.text
    assert missing.json()["detail"]["code"] == "order_not_found"
    assert int(missing.headers["Retry-After"]) >= 1
    assert missing.headers["Preference-Applied"] == f"wait={honoured}"
    assert waited >= honoured - 0.1, f"answered after {waited:.1f} s, not after the {honoured} s honoured"


def test_capacity_through_the_gateway_is_the_cap_less_every_stored_order(
    cluster: Cluster, history: list[dict[str, Any]]
) -> None:
    api = cluster.api
    url = f"{api.create_url}/capacity"

    def capacity() -> dict[str, Decimal]:
        response = api.request("GET", url)
        assert response.status_code == 200, f"GET /capacity: {response.status_code} {response.text}"
        body = response.json()
        assert set(body) == {"cap_btc", "used_btc", "available_btc"}, body
        assert all(isinstance(value, str) and len(value.split(".")[1]) == 8 for value in body.values()), body
        return {name: Decimal(value) for name, value in body.items()}

    def at_rest() -> dict[str, Decimal]:
        stored = sum((Decimal(order["bitcoin_amount"]) for order in api.every_order()), Decimal(0))
        shown = capacity()
        assert shown == {"cap_btc": cluster.btc_cap, "used_btc": stored, "available_btc": cluster.btc_cap - stored}, (
            f"{shown}, with {stored} BTC in the read model"
        )
        return shown

    before = wait_for("GET /capacity to equal the cap less every order listed", at_rest, 60, interval=1)
    assert before["available_btc"] == api.available_btc()  # what the cap's 409 says is left

    order = api.created("USD", "10.00")
    after = capacity()  # the write model's ledger: no projection to wait for
    assert after["used_btc"] == before["used_btc"] + Decimal(order["bitcoin_amount"])
    assert after["available_btc"] == before["available_btc"] - Decimal(order["bitcoin_amount"])


def test_a_body_that_is_not_json_is_a_415_and_leaves_the_key_unused(api: Api) -> None:
    key = str(uuid.uuid4())
    fields = {"currency": "USD", "amount": "10.00", "idempotence_key": key}
    url = f"{api.create_url}/buy_order"
    for headers, content in (
        ({"Content-Type": "text/plain"}, json.dumps(fields)),
        ({"Content-Type": "application/x-www-form-urlencoded"}, str(httpx.QueryParams(fields))),
    ):
        refused = api.request("PUT", url, content=content, headers=headers)
        assert refused.status_code == 415, f"{headers}: {refused.status_code} {refused.text}"
        detail = refused.json()["detail"]
        assert detail["code"] == "unsupported_media_type", detail
        assert "application/json" in detail["message"], detail

    # JSON without a content type keeps working (the seed's curl form), with the same key
    untyped = api.request("PUT", url, content=json.dumps(fields))
    assert "content-type" not in untyped.request.headers
    assert untyped.status_code == 201, untyped.text
    assert untyped.json()["idempotence_key"] == key


def test_the_idempotency_key_header_is_accepted_quoted_and_bare(api: Api) -> None:
    key = str(uuid.uuid4())
    url = f"{api.create_url}/buy_order"
    body = {"currency": "EUR", "amount": "12.34"}
    quoted = api.request("PUT", url, json=body, headers={"Idempotency-Key": f'"{key}"'})
    assert quoted.status_code == 201, quoted.text
    assert quoted.json()["idempotence_key"] == key

    bare = api.request("PUT", url, json=body, headers={"Idempotency-Key": key})
    assert bare.status_code == 200, bare.text
    assert bare.headers["Idempotent-Replayed"] == "true"
    assert bare.content == quoted.content

    both = api.request("PUT", url, json={**body, "idempotence_key": key}, headers={"Idempotency-Key": f'"{key}"'})
    assert (both.status_code, both.content) == (200, quoted.content)

    conflict = api.request(
        "PUT", url, json={**body, "idempotence_key": key}, headers={"Idempotency-Key": f'"{uuid.uuid4()}"'}
    )
    assert conflict.status_code == 400, conflict.text
    assert conflict.json()["detail"]["code"] == "idempotence_key_conflict"


@pytest.mark.parametrize("port", ["create", "fetch"])
def test_the_gateway_publishes_only_the_public_api_and_its_document(api: Api, port: str) -> None:
    base = api.create_url if port == "create" else api.fetch_url
    for internal in ("/metrics", "/readyz", "/healthz", "/btc_price/USD"):
        answer = httpx.get(f"{base}{internal}", timeout=10)
        assert answer.status_code == 404, internal
        assert answer.json()["detail"]["code"] == "not_found", internal
    document = httpx.get(f"{base}/openapi.json", timeout=10)
    assert document.status_code == 200
    assert document.json() == json.loads((REPO / "docs" / "openapi" / "gateway.json").read_text())
    page = httpx.get(f"{base}/docs", timeout=10)
    assert page.status_code == 200 and "/openapi.json" in page.text
