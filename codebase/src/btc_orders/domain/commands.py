"""Commands: what a caller asks the service layer to do, free of any transport."""

import uuid
from dataclasses import dataclass
from decimal import Decimal

from btc_orders.domain.orders import Currency, OrderRequest


@dataclass(frozen=True, slots=True)
class PlaceBuyOrder:
    """Buy BTC for `amount` of `currency`, once per `idempotence_key` (SPEC 3.1).

    The key is already resolved: where it came from (body or header) is the HTTP layer's business.
    """

    currency: Currency
    amount: Decimal
    idempotence_key: uuid.UUID
    request_id: str | None = None

    @property
    def request(self) -> OrderRequest:
        return OrderRequest(self.currency, self.amount, self.idempotence_key)
