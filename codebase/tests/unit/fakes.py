"""In-memory stand-ins for the create flow's ports (`RateSource`, `OrderStore`), cosmic-style."""

import itertools
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded, RateUnavailable
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest


class FakeRates:
    """A rate per currency; `down` makes every call a `RateUnavailable` (Coinbase down). `at_hand`:
    `reusable_rate` gives the rate (as a client holding a recent one); False: only `rate` does."""

    def __init__(self, **rates: str) -> None:
        self.rates = {Currency(code): Decimal(rate) for code, rate in rates.items()}
        self.down = False
        self.at_hand = True
        self.asked: list[tuple[Currency, str | None]] = []

    def reusable_rate(self, currency: Currency, request_id: str | None = None) -> Decimal | None:
        if self.down or not self.at_hand:
            return None
        self.asked.append((currency, request_id))
        return self.rates[currency]

    def rate(self, currency: Currency, request_id: str | None = None) -> Decimal:
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
        self.settles_on_loop = True  # False: `place_on_loop` always hands over to `place`
        self.placed_on_loop = 0  # orders `place_on_loop` settled
        self._sequence = itertools.count(1)

    @property
    def used_satoshis(self) -> int:
        return sum(money.btc_to_satoshis(order.bitcoin_amount) for order in self.by_key.values())

    def place(self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None) -> tuple[BuyOrder, bool]:
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
        )
        self.by_key[request.idempotence_key] = order
        return order, True

    async def place_on_loop(
        self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None
    ) -> tuple[BuyOrder, bool] | None:
        """As the write model's one statement: the key's order, or the order stored if it fits; else
        None (nothing stored) and the handler calls `place`."""
        if not self.settles_on_loop:
            return None
        existing = self.by_key.get(request.idempotence_key)
        if existing is not None:  # the statement finds the key first, whatever the cap says now
            placed = existing, False
        elif money.bitcoin_satoshis(request.amount, exchange_rate) <= self.cap_satoshis - self.used_satoshis:
            placed = self.place(request, exchange_rate, request_id)
        else:
            return None
        self.placed_on_loop += 1
        return placed

    def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None:
        return self.by_key.get(idempotence_key)

    def capacity(self) -> tuple[int, int] | None:
        return self.cap_satoshis, self.cap_satoshis - self.used_satoshis
