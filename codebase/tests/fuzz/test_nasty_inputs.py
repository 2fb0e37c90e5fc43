"""Hand-written nasty inputs to every service: the ones a generator rarely thinks of.

Huge and deep JSON, wrong content types, invalid UTF-8, unicode and control
characters, SQL-looking strings, out-of-range numbers, duplicate keys, paging
edge values. The properties: never a 5xx; an error body in a documented shape
(FastAPI's validation shape for 422, `{"detail": {"code", "message"}}` for every
other error); a rejected request stores nothing, neither order nor outbox row.
"""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import db
from btc_orders.web import MAX_BODY_BYTES
from tests.e2e.conftest import Suite

SQL = "'; DROP TABLE buy_order; --"
SQL_STRINGS = (SQL, "1' OR '1'='1", "1; SELECT pg_sleep(5)--", '" OR ""="', "%' --", "\\'; DROP TABLE outbox; --")
NASTY_STRINGS = (
    *SQL_STRINGS,
    "",
    " ",
    "USD\x00",
    "\x00",
    "\u202eDSU",  # right-to-left override
    "ＵＳＤ",  # fullwidth
    "usd",
    "💸",
    "\ud800",  # a lone surrogate: not even encodable as UTF-8 by a strict encoder
    "\x1b[31mred",
    "a" * 5000,
    "１２３.４５",  # fullwidth digits, which Python's Decimal would accept
    "١٢٣",  # Arabic-Indic digits
    "123.45\n",
    " 123.45",
    "+123.45",
    "0x10",
    "1_000",
    "1,000.00",
)


@pytest.fixture(scope="module")
def create(fuzz_suite: Suite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_suite.service("create_buy_order").url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def fetch(fuzz_suite: Suite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_suite.service("fetch_buy_orders").url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def price(fuzz_suite: Suite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_suite.service("btc_price").url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def write_db(fuzz_suite: Suite) -> Iterator[Engine]:
    engine = db.create_engine(fuzz_suite.databases.write_url, 2)
    yield engine
    engine.dispose()


def stored(write_db: Engine) -> tuple[int, int]:
    """Orders and outbox rows in the write model."""
    with write_db.connect() as connection:
        orders = connection.execute(text("SELECT count(*) FROM buy_order")).scalar_one()
        outbox = connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()
    return orders, outbox


def assert_documented_error(response: httpx.Response, *statuses: int) -> None:
    """A 4xx among `statuses` (any 4xx if none given) with a body in a documented shape."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:2000]}"
    if statuses:
        assert response.status_code in statuses, f"{response.status_code}: {response.text[:2000]}"
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:2000]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"detail"}, body
    if response.status_code == 422 and isinstance(body["detail"], list):
        assert body["detail"], body
        for error in body["detail"]:
            assert isinstance(error["loc"], list) and isinstance(error["msg"], str) and isinstance(error["type"], str)
    else:
        assert isinstance(body["detail"], dict), body
        assert isinstance(body["detail"]["code"], str) and body["detail"]["code"], body
        assert isinstance(body["detail"]["message"], str) and body["detail"]["message"], body


def order(**fields: Any) -> dict[str, Any]:
    return {"currency": "USD", "amount": "1.00", "idempotence_key": str(uuid.uuid4()), **fields}


def put_raw(
    client: httpx.Client, content: bytes | str, content_type: str | None = "application/json"
) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return client.put("/buy_order", content=content, headers=headers)


# --- body size: 413 -------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid order padded with JSON whitespace to exactly `size` bytes."""
    body = json.dumps(order()).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_body_of_exactly_the_limit_is_accepted(create: httpx.Client) -> None:
    response = put_raw(create, padded(MAX_BODY_BYTES))
    assert response.status_code == 201, response.text


def test_a_body_over_the_limit_gets_413_and_stores_nothing(create: httpx.Client, write_db: Engine) -> None:
    before = stored(write_db)
    response = put_raw(create, padded(MAX_BODY_BYTES + 1))
    assert_documented_error(response, 413)
    assert response.json()["detail"]["code"] == "payload_too_large"
    assert stored(write_db) == before


def test_a_huge_chunked_body_gets_413_and_stores_nothing(create: httpx.Client, write_db: Engine) -> None:
    """No Content-Length to refuse up front: the limit holds while the body streams in."""
    before = stored(write_db)
    body = padded(1024 * 1024)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = create.put("/buy_order", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_documented_error(response, 413)
    assert response.json()["detail"]["code"] == "payload_too_large"
    assert stored(write_db) == before


@pytest.mark.parametrize("service", ["btc_price", "fetch_buy_orders"])
def test_the_limit_holds_on_every_service(fuzz_suite: Suite, service: str) -> None:
    path = "/btc_price/USD" if service == "btc_price" else "/buy_orders"
    response = httpx.request("GET", fuzz_suite.service(service).url + path, content=b"x" * (MAX_BODY_BYTES + 1))
    assert_documented_error(response, 413)


# --- malformed JSON -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 10_000, id="10000-open-brackets"),
        pytest.param(b"[" * 8000 + b"]" * 8000, id="8000-nested-arrays"),
        pytest.param(b'{"a":' * 3000 + b"1" + b"}" * 3000, id="3000-nested-objects"),
        pytest.param(
            b'{"currency": "USD", "amount": ' + b"[" * 5000 + b"]" * 5000 + b', "idempotence_key": null}',
            id="deep-amount",
        ),
        pytest.param(b"\xff\xfe\xfa", id="invalid-utf8"),  # found by schemathesis: was a 400 in no documented shape
        pytest.param(b'{"currency": "US\xc3", "amount": "1.00"}', id="truncated-utf8-sequence"),
        pytest.param(b'{"currency": "USD", "amount": "1.00", "idempotence_key": "\xed\xa0\x80"}', id="utf8-surrogate"),
        pytest.param(b"", id="empty"),
        pytest.param(b"null", id="null"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"USD"', id="string"),
        pytest.param(b'{"currency": "USD", "amount": NaN}', id="NaN"),
        pytest.param(b'{"currency": "USD", "amount": Infinity}', id="Infinity"),
        pytest.param(b'{"currency": "USD", "amount": "1.00"', id="truncated"),
        pytest.param(b'{"currency": "USD", "amount": "1.00"}}', id="trailing-garbage"),
        pytest.param(b"{'currency': 'USD'}", id="single-quotes"),
    ],
)
def test_malformed_json_is_a_documented_4xx_and_stores_nothing(
    create: httpx.Client, write_db: Engine, body: bytes
) -> None:
    before = stored(write_db)
    response = put_raw(create, body)
    assert_documented_error(response)
    assert stored(write_db) == before


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xef\xbb\xbf" + json.dumps(order()).encode(), id="utf8-bom"),
        pytest.param(json.dumps(order()).encode("utf-16"), id="utf-16"),
        pytest.param(json.dumps(order()).encode("utf-32-be"), id="utf-32"),
    ],
)
def test_json_in_other_unicode_encodings_is_read_or_refused(
    create: httpx.Client, write_db: Engine, body: bytes
) -> None:
    """Python's parser detects UTF-16/32 and a BOM: such a body is read as the order it is, or refused."""
    before = stored(write_db)
    response = put_raw(create, body)
    if response.status_code != 201:
        assert_documented_error(response)
        assert stored(write_db) == before


def test_a_lone_surrogate_escape_is_a_422_not_a_500(create: httpx.Client, write_db: Engine) -> None:
    """Regression: `"\\ud800"` parsed to a str that FastAPI could not encode into its 422 answer: a 500."""
    before = stored(write_db)
    for field in ("currency", "amount", "idempotence_key"):
        response = put_raw(create, json.dumps(order(**{field: "\ud800"})))
        assert_documented_error(response, 422)
    response = put_raw(create, json.dumps({**order(), "\udfff": 1}))
    assert_documented_error(response, 422)
    assert stored(write_db) == before


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=latin-1",
        "*/*",
        None,
    ],
)
def test_wrong_content_types_never_fail_the_server(
    create: httpx.Client, fetch: httpx.Client, write_db: Engine, content_type: str | None
) -> None:
    """A JSON body under another media type: refused with a 415, or read as the JSON it is."""
    body = order()
    before = stored(write_db)
    response = put_raw(create, json.dumps(body), content_type)
    assert response.status_code < 500, response.text
    if content_type is None or content_type.startswith("application/json"):
        assert response.status_code == 201, response.text
        assert response.json()["idempotence_key"] == body["idempotence_key"]
    else:
        assert_documented_error(response, 415)
        assert response.json()["detail"]["code"] == "unsupported_media_type"
        assert stored(write_db) == before
    form = create.put("/buy_order", data={k: str(v) for k, v in order().items()})
    assert_documented_error(form, 415)


# --- field values ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", NASTY_STRINGS, ids=range(len(NASTY_STRINGS)))
@pytest.mark.parametrize("field", ["currency", "amount", "idempotence_key"])
def test_nasty_strings_in_every_field_are_refused(
    create: httpx.Client, write_db: Engine, field: str, value: str
) -> None:
    before = stored(write_db)
    body = json.dumps(order(**{field: value})).encode("utf-8", "surrogatepass")
    response = put_raw(create, body)
    assert_documented_error(response, 422)
    assert stored(write_db) == before


@pytest.mark.parametrize("value", [*SQL_STRINGS, "é", "ÿ", "x" * 8000])
def test_nasty_idempotency_key_headers_are_refused(create: httpx.Client, write_db: Engine, value: str) -> None:
    before = stored(write_db)
    body = order()
    del body["idempotence_key"]
    response = create.put("/buy_order", json=body, headers={"Idempotency-Key": value.encode("utf-8")})  # type: ignore[dict-item]
    assert_documented_error(response)
    assert stored(write_db) == before


@pytest.mark.parametrize(
    "amount",
    [
        "1e309",
        "-1e309",
        "1e-400",
        "-0",
        "-0.0",
        "0",
        "0.00",
        "-1",
        "1e3",
        "1E2",
        "1.005",
        "0.001",
        "1000000000",
        "999999999.995",
        "9999999999999999999999",
        "9" * 5000,  # past Python's 4300-digit limit for int()
        "1" + "0" * 4400 + ".5",
        "0." + "0" * 5000 + "1",
        "true",
        "null",
        "[]",
        "{}",
        '"1e3"',
        '"NaN"',
        '"Infinity"',
        '"-0"',
        '"0"',
        '"1000000000"',
    ],
)
def test_out_of_range_numbers_are_refused_with_a_422_naming_amount(
    create: httpx.Client, write_db: Engine, amount: str
) -> None:
    before = stored(write_db)
    key = str(uuid.uuid4())
    response = put_raw(create, f'{{"currency": "USD", "amount": {amount}, "idempotence_key": "{key}"}}')
    assert_documented_error(response, 422)
    assert any(error["loc"][:2] == ["body", "amount"] for error in response.json()["detail"]), response.text
    assert stored(write_db) == before


@pytest.mark.parametrize("amount", ["999999999.99", "0.01", "1", "1.5", "12.30"])
def test_amounts_at_the_edges_of_the_range_are_stored(create: httpx.Client, amount: str) -> None:
    key = str(uuid.uuid4())
    response = put_raw(create, f'{{"currency": "EUR", "amount": {amount}, "idempotence_key": "{key}"}}')
    assert response.status_code == 201, response.text


def test_duplicate_keys_never_fail_and_the_answer_is_what_was_stored(
    create: httpx.Client, fetch: httpx.Client, write_db: Engine
) -> None:
    """Python's parser keeps the last of duplicate keys; whatever it keeps is what is answered and stored."""
    key = str(uuid.uuid4())
    body = f'{{"currency": "USD", "currency": "EUR", "amount": "2.00", "amount": "3.00", "idempotence_key": "{key}"}}'
    response = put_raw(create, body)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:
        answered = response.json()
        assert (answered["currency"], answered["amount"]) == ("EUR", "3.00")
        with write_db.connect() as connection:
            row = connection.execute(
                text("SELECT currency, amount::text FROM buy_order WHERE idempotence_key = :key"), {"key": key}
            ).one()
        assert tuple(row) == ("EUR", "3.00")
    else:
        assert_documented_error(response, 422)


def test_unknown_and_extra_fields_are_refused(create: httpx.Client, write_db: Engine) -> None:
    before = stored(write_db)
    for extra in ({"id": str(uuid.uuid4())}, {"bitcoin_amount": "1"}, {"__proto__": {}}, {SQL: SQL}):
        assert_documented_error(create.put("/buy_order", json=order(**extra)), 422)
    assert stored(write_db) == before


# --- query and path parameters ------------------------------------------------------------


@pytest.mark.parametrize("value", [*SQL_STRINGS, "é", "\x00", "x" * 4000, "00000000-0000-0000-0000-00000000000g"])
def test_nasty_last_reference_is_a_422(fetch: httpx.Client, value: str) -> None:
    assert_documented_error(fetch.get("/buy_orders", params={"last_reference": value}), 422)


def test_unknown_last_reference_is_a_404(fetch: httpx.Client) -> None:
    response = fetch.get("/buy_orders", params={"last_reference": str(uuid.uuid4())})
    assert_documented_error(response, 404)
    assert response.json()["detail"]["code"] == "unknown_reference"


@pytest.mark.parametrize(
    ("page_size", "status"),
    [
        ("1", 200),
        ("1000", 200),
        ("0", 422),
        ("1001", 422),
        ("-1", 422),
        ("1.5", 422),
        ("1e3", 422),
        ("99999999999999999999999999", 422),
        ("9" * 5000, 422),
        ("", 422),
        (" 10", 200),  # pydantic reads surrounding whitespace in integers
        ("NaN", 422),
        (SQL, 422),
    ],
)
def test_page_size_edges(fetch: httpx.Client, page_size: str, status: int) -> None:
    response = fetch.get("/buy_orders", params={"page_size": page_size})
    if status == 200:
        assert response.status_code == 200, response.text
        assert len(response.json()["buy_orders"]) <= 1000
    else:
        assert_documented_error(response, status)


def test_repeated_query_parameters_never_fail(fetch: httpx.Client) -> None:
    response = fetch.get("/buy_orders", params=[("page_size", "1"), ("page_size", SQL), ("last_reference", SQL)])
    assert_documented_error(response, 422)


@pytest.mark.parametrize("value", [*SQL_STRINGS, "..%2f..%2fetc%2fpasswd", "../../etc/passwd", "%00", "é", "x" * 4000])
def test_nasty_order_ids_are_a_4xx(fetch: httpx.Client, value: str) -> None:
    assert_documented_error(fetch.get(f"/buy_orders/{value}"))


@pytest.mark.parametrize("service", ["btc_price", "create_buy_order", "fetch_buy_orders"])
def test_unknown_paths_and_methods_answer_in_the_error_shape(fuzz_suite: Suite, service: str) -> None:
    """Regression: Starlette's own 404 and 405 answered `{"detail": "Not Found"}`, a shape of their own."""
    url = fuzz_suite.service(service).url
    response = httpx.get(f"{url}/no/such/path")
    assert_documented_error(response, 404)
    assert response.json()["detail"]["code"] == "not_found"
    response = httpx.delete(f"{url}/healthz")
    assert_documented_error(response, 405)
    assert response.json()["detail"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize("header", [b"application/json\x7f", b"\x00", b"application/json\x1b[31m"])
def test_header_bytes_http_forbids_are_refused_before_the_app(create: httpx.Client, header: bytes) -> None:
    """The HTTP server refuses them with its own plain 400; the point is that it is not a 5xx."""
    try:
        response = create.put("/buy_order", content=json.dumps(order()), headers={"Content-Type": header})  # type: ignore[dict-item]
    except httpx.LocalProtocolError:
        return  # the client would not even send it
    assert 400 <= response.status_code < 500, response.text


def test_an_unknown_order_id_is_a_404(fetch: httpx.Client) -> None:
    response = fetch.get(f"/buy_orders/{uuid.uuid4()}")
    assert_documented_error(response, 404)


@pytest.mark.parametrize("value", [*SQL_STRINGS, "usd", "XBT", "BTC", "%00", "é", "USD%20", "x" * 4000])
def test_nasty_currencies_for_btc_price_are_a_422(price: httpx.Client, value: str) -> None:
    assert_documented_error(price.get(f"/btc_price/{value}"))


def test_the_tables_are_all_still_there(fetch: httpx.Client, write_db: Engine) -> None:
    """After every SQL-looking string above, both models still answer and hold the seeded orders."""
    assert stored(write_db)[0] >= 5
    assert fetch.get("/buy_orders").status_code == 200
