"""One order, rendered every way the suite renders it, gives the same bytes.

The order resource's shape is declared once (`domain.orders.FIELDS`: `RESOURCE_FIELDS`, `resource_of`). It is
rendered by: the create service's answer (the domain, from the request's values), its replay (the
domain, from the values read back from the write model), the event the relay publishes (rendered
from the stored order: its `order` is the resource plus `sequence`), the projection of that event
into the read model (the stored document `GET /buy_orders/{id}` serves), the read model's SQL
function of migrations 0002 and 0004 (rows inserted without a document), and the admin repair (from the
write model's rows). Each must be the answer's bytes.
"""

import asyncio
import uuid
from decimal import Decimal

import orjson
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import outbox
from btc_orders.adapters.projection import apply_created_events, event_row
from btc_orders.adapters.read_model import ReadModel
from btc_orders.admin.reconcile import reconcile
from btc_orders.domain import money
from btc_orders.domain.orders import RESOURCE_FIELDS, Currency, OrderRequest
from btc_orders.events import parse_created_event
from tests.support.services import Databases, opened_pool
from tests.support.write_model import WriteModel

# (currency, amount as the client wrote it, exchange rate as Coinbase wrote it, client_order_id)
ORDERS = [
    (Currency.USD, "123.45", "97012.34", None),
    (Currency.EUR, "10.5", "97012.340", "shop-42/A"),  # the amount gains its cents; the rate keeps its trailing zero
    (Currency.GBP, "0.01", "123456789012345678.12345678901", ' "q" \\ /<>&'),  # the smallest BTC amount, a huge rate
    (Currency.USD, "999999999.99", "0.5", "~" * 64),  # the largest amount, a BTC amount of 18 digits
    (Currency.EUR, "1", "1", "".join(chr(c) for c in range(0x20, 0x60))),  # printable ASCII, JSON's escapes
]


def served(databases: Databases, order_id: uuid.UUID) -> bytes:
    """`GET /buy_orders/{id}`'s body, as the service reads it (`ReadModel` on its pool)."""

    async def one_body() -> bytes:
        async with opened_pool(databases.read_url, 1) as pool:
            return await ReadModel(pool).one_body(order_id)

    return asyncio.run(one_body())


@pytest.mark.parametrize(("currency", "amount", "rate", "client_order_id"), ORDERS)
def test_every_rendering_of_an_order_is_the_answers_bytes(
    databases: Databases,
    write_engine: Engine,
    read_engine: Engine,
    currency: Currency,
    amount: str,
    rate: str,
    client_order_id: str | None,
) -> None:
    write_model = WriteModel(write_engine)
    write_model.ensure_cap(money.btc_to_satoshis(Decimal("21000000000")))
    request = OrderRequest(currency, Decimal(amount), uuid.uuid4(), client_order_id)
    placed, created = write_model.place(request, Decimal(rate), 'req "1"')
    assert created
    answer = orjson.dumps(placed.resource())  # the 201 body (web.json_response)
    assert list(orjson.loads(answer)) == list(RESOURCE_FIELDS)
    assert orjson.loads(answer)["client_order_id"] == client_order_id

    replayed = write_model.find_by_key(request.idempotence_key)
    assert replayed is not None
    assert orjson.dumps(replayed.resource()) == answer, "the replay (200) from the stored values"

    with write_engine.begin() as connection:
        [claimed] = outbox.claim(connection, 10)
    payload = claimed.payload.encode()
    assert b'"order":' + answer[:-1] + b',"sequence":%d}}' % placed.sequence in payload, "the event's order"
    event = parse_created_event(payload)

    with read_engine.begin() as connection:
        apply_created_events(connection, [event_row(event)])
    assert served(databases, placed.id) == answer, "the projected document"

    with read_engine.connect() as connection:
        in_sql = connection.execute(
            text("SELECT buy_order_document(o) FROM buy_order_view AS o WHERE id = :id"), {"id": placed.id}
        ).scalar_one()
    assert in_sql.encode() == answer, "the read model's SQL function (migrations 0002, 0004)"

    assert reconcile(write_engine, read_engine, repair=False).clean, "the repair's rendering from the write model"
    with read_engine.begin() as connection:
        connection.execute(text("DELETE FROM buy_order_view"))
    assert reconcile(write_engine, read_engine, repair=True).repaired == 1
    assert served(databases, placed.id) == answer, "the document the admin repair wrote"
