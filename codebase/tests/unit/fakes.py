"""In-memory stand-ins for the create flow's ports (`RateSource`, `OrderStore`), cosmic-style."""

import itertools
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded, RateUnavailable
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest


class FakeRates:
    """A rate per currency; `down` makes every call a `RateUnavailable` (Coinbase down)."""

    def __init__(self, **rates: str) -> None:
        self.rates = {Currency(code): Decimal(rate) for code, rate in rates.items()}
        self.down = False
        self.asked: list[tuple[Currency, str | None]] = []

    async def rate(self, currency: Currency, request_id: str | None = None) -> Decimal:
        self.asked.append((currency, request_id))
        if self.down:
            raise RateUnavailable("no fresh BTC rate can be had right now; retry shortly", retry_after=1)
        return self.rates[currency]


class FakeOrderStore:
    """Orders by key under a cap in satoshis, as the write model keeps them.

    The cap is checked before the key, as the write model's refusal above the whole cap is: the
    handler, not the store, must answer a replay whatever the cap says now.
    """

    def __init__(self, cap_btc: str = "100") -> None:
        self.cap_satoshis = money.btc_to_satoshis(Decimal(cap_btc))
        self.by_key: dict[uuid.UUID, BuyOrder] = {}
        self.placed_at_rate: list[Decimal] = []
        self._sequence = itertools.count(1)

    @property
    def used_satoshis(self) -> int:
        return sum(money.btc_to_satoshis(order.bitcoin_amount) for order in self.by_key.values())

    async def place(
        self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None
    ) -> tuple[BuyOrder, bool]:
        self.placed_at_rate.append(exchange_rate)
        satoshis = money.bitcoin_satoshis(request.amount, exchange_rate)
        available = self.cap_satoshis - self.used_satoshis
        if satoshis > available:
            raise BtcCapExceeded(money.satoshis_to_btc(satoshis), money.satoshis_to_btc(available))
        existing = self.by_key.get(request.idempotence_key)
        if existing is not None:
            return existing, False
        order = BuyOrder(
            id=uuid.uuid4(),
            sequence=next(self._sequence),
            created_at=datetime.now(UTC),
            currency=request.currency,
            amount=request.amount,
            exchange_rate=exchange_rate,
            bitcoin_amount=money.satoshis_to_btc(satoshis),
            idempotence_key=request.idempotence_key,
            client_order_id=request.client_order_id,
        )
        self.by_key[request.idempotence_key] = order
        return order, True

    async def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None:
        return self.by_key.get(idempotence_key)


class FakeLedger:
    """The cap ledger of a `FakeOrderStore`: `capacity` as `CapLedger` reads it; `exists` False: before
    `ensure_cap` ever ran."""

    def __init__(self, orders: FakeOrderStore) -> None:
        self.orders = orders
        self.exists = True

    async def capacity(self) -> tuple[int, int] | None:
        if not self.exists:
            return None
        return self.orders.cap_satoshis, self.orders.cap_satoshis - self.orders.used_satoshis
