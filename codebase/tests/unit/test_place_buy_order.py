"""The create rules of SPEC 3.1 and 5, on the handler with in-memory ports (no process, no I/O)."""

import logging
import uuid
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from btc_orders.domain.commands import PlaceBuyOrder
from btc_orders.domain.errors import BtcCapExceeded, IdempotenceKeyReused, OrderInFlight, RateUnavailable
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest
from btc_orders.services.create_buy_order.handler import KeysInFlight, place_buy_order
from tests.unit.fakes import FakeOrderStore, FakeRates

pytestmark = pytest.mark.anyio


@pytest.fixture
def rates() -> FakeRates:
    return FakeRates(USD="50000", EUR="40000", GBP="35000.5")


@pytest.fixture
def orders() -> FakeOrderStore:
    return FakeOrderStore(cap_btc="100")


@pytest.fixture
def in_flight() -> KeysInFlight:
    return KeysInFlight()


def command(amount: str = "100", currency: str = "USD", key: uuid.UUID | None = None) -> PlaceBuyOrder:
    return PlaceBuyOrder(OrderRequest(Currency(currency), Decimal(amount), key or uuid.uuid4()), request_id="req-1")


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_new_key_stores_the_order_priced_at_the_rate_asked_for_first(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight
) -> None:
    before = counted("buy_orders_created_total", currency="USD")
    order, created = await place_buy_order(command("100"), rates, orders, in_flight)
    assert created
    assert (order.currency, order.amount, order.exchange_rate) == (Currency.USD, Decimal("100"), Decimal("50000"))
    assert order.bitcoin_amount == Decimal("0.00200000")
    assert rates.asked == [(Currency.USD, "req-1")]  # the request id reaches the rate source
    assert orders.placed_at_rate == [Decimal("50000")]
    assert counted("buy_orders_created_total", currency="USD") == before + 1


async def test_bitcoin_is_rounded_up_to_the_satoshi(rates: FakeRates, orders: FakeOrderStore) -> None:
    order, _ = await place_buy_order(command("1", "GBP"), rates, orders, KeysInFlight())
    assert order.bitcoin_amount == Decimal("0.00002858")  # 1 / 35000.5 = 0.0000285710...


async def test_the_same_key_and_order_again_is_the_same_order_replayed(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight
) -> None:
    key = uuid.uuid4()
    first, _ = await place_buy_order(command("10.50", key=key), rates, orders, in_flight)
    before = counted("buy_orders_replayed_total")
    again, created = await place_buy_order(
        command("10.5", key=key), rates, orders, in_flight
    )  # the same amount by value
    assert not created
    assert again == first and again.resource() == first.resource()
    assert len(orders.by_key) == 1
    assert counted("buy_orders_replayed_total") == before + 1


async def test_a_replay_is_answered_when_no_rate_can_be_had(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight
) -> None:
    key = uuid.uuid4()
    first, _ = await place_buy_order(command(key=key), rates, orders, in_flight)
    rates.down = True
    again, created = await place_buy_order(command(key=key), rates, orders, in_flight)
    assert (again, created) == (first, False)


async def test_a_replay_is_answered_when_the_cap_is_now_reached(rates: FakeRates, in_flight: KeysInFlight) -> None:
    orders = FakeOrderStore(cap_btc="0.003")
    key = uuid.uuid4()
    first, _ = await place_buy_order(command("100", key=key), rates, orders, in_flight)  # 0.002 of 0.003 BTC
    await place_buy_order(command("50"), rates, orders, in_flight)  # the last 0.001
    again, created = await place_buy_order(command("100", key=key), rates, orders, in_flight)
    assert (again, created) == (first, False)


@pytest.mark.parametrize(("amount", "currency"), [("100.01", "USD"), ("100", "EUR")])
async def test_a_key_reused_for_another_amount_or_currency_is_refused(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight, amount: str, currency: str
) -> None:
    key = uuid.uuid4()
    first, _ = await place_buy_order(command("100", "USD", key), rates, orders, in_flight)
    before = counted("buy_orders_rejected_total", code="idempotence_key_reused")
    with pytest.raises(IdempotenceKeyReused, match=rf"{key} already names an order of 100\.00 USD"):
        await place_buy_order(command(amount, currency, key), rates, orders, in_flight)
    assert list(orders.by_key.values()) == [first]
    assert counted("buy_orders_rejected_total", code="idempotence_key_reused") == before + 1


async def test_a_key_reused_while_no_rate_can_be_had_is_still_refused(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight
) -> None:
    key = uuid.uuid4()
    await place_buy_order(command("100", key=key), rates, orders, in_flight)
    rates.down = True
    with pytest.raises(IdempotenceKeyReused):
        await place_buy_order(command("200", key=key), rates, orders, in_flight)


async def test_no_rate_is_a_rate_unavailable_with_nothing_stored_and_the_key_left_unused(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight
) -> None:
    key = uuid.uuid4()
    rates.down = True
    before = counted("buy_orders_rejected_total", code="rate_unavailable")
    with pytest.raises(RateUnavailable) as raised:
        await place_buy_order(command(key=key), rates, orders, in_flight)
    assert raised.value.retry_after == 1
    assert orders.by_key == {} and orders.placed_at_rate == []  # the store is not reached without a rate
    assert counted("buy_orders_rejected_total", code="rate_unavailable") == before + 1
    rates.down = False
    _, created = await place_buy_order(command(key=key), rates, orders, in_flight)  # only a stored order binds a key
    assert created


async def test_an_order_over_the_cap_is_refused_with_what_is_still_available(
    rates: FakeRates, in_flight: KeysInFlight
) -> None:
    orders = FakeOrderStore(cap_btc="0.003")
    await place_buy_order(command("100"), rates, orders, in_flight)
    key = uuid.uuid4()
    with pytest.raises(BtcCapExceeded) as raised:
        await place_buy_order(command("100", key=key), rates, orders, in_flight)
    assert (raised.value.requested, raised.value.available) == (Decimal("0.00200000"), Decimal("0.00100000"))
    assert key not in orders.by_key
    _, created = await place_buy_order(command("50", key=key), rates, orders, in_flight)  # the key is still free
    assert created and orders.used_satoshis == orders.cap_satoshis  # equal to the cap is allowed


async def test_over_the_cap_while_another_attempt_with_the_key_is_in_flight_is_order_in_flight(
    rates: FakeRates, in_flight: KeysInFlight
) -> None:
    orders = FakeOrderStore(cap_btc="0.001")
    key = uuid.uuid4()
    with in_flight.placing(key), pytest.raises(OrderInFlight) as raised:  # the other attempt, still being priced
        await place_buy_order(command("100", key=key), rates, orders, in_flight)
    assert raised.value.retry_after == 1
    assert str(key) in raised.value.message
    with pytest.raises(BtcCapExceeded):  # alone, the final answer
        await place_buy_order(command("100", key=key), rates, orders, in_flight)


async def test_no_rate_while_another_attempt_is_in_flight_is_still_rate_unavailable(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight
) -> None:
    key = uuid.uuid4()
    rates.down = True
    with in_flight.placing(key), pytest.raises(RateUnavailable):
        await place_buy_order(command(key=key), rates, orders, in_flight)


def test_keys_in_flight_are_counted_per_key_and_forgotten_when_done(in_flight: KeysInFlight) -> None:
    key, other = uuid.uuid4(), uuid.uuid4()
    with in_flight.placing(key) as others:
        assert not others()
        with in_flight.placing(other):
            assert not others()
        with in_flight.placing(key):
            assert others()
        assert not others()
    assert not in_flight._counts  # nothing left behind per key


async def test_created_and_replayed_are_logged_as_events(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="btc_orders.services.create_buy_order.handler")
    key = uuid.uuid4()
    order, _ = await place_buy_order(command(key=key), rates, orders, in_flight)
    await place_buy_order(command(key=key), rates, orders, in_flight)
    events = [record.getMessage() for record in caplog.records]
    assert events == ["order_created", "order_replayed"]
    created_fields = caplog.records[0].__dict__["event_fields"]
    assert created_fields["order_id"] == str(order.id)
    assert (created_fields["amount"], created_fields["bitcoin_amount"]) == (Decimal("100"), Decimal("0.00200000"))
    assert caplog.records[1].__dict__["event_fields"] == {"order_id": str(order.id)}


async def test_the_key_is_counted_in_flight_while_the_order_is_placed_and_forgotten_after(
    rates: FakeRates, orders: FakeOrderStore, in_flight: KeysInFlight
) -> None:
    key = uuid.uuid4()
    seen: list[int] = []
    real_place = orders.place

    async def place_watched(*args: Any) -> tuple[BuyOrder, bool]:
        seen.append(in_flight._counts[key])
        return await real_place(*args)

    orders.place = place_watched  # type: ignore[method-assign]
    _, created = await place_buy_order(command(key=key), rates, orders, in_flight)
    assert created and seen == [1]
    assert not in_flight._counts
