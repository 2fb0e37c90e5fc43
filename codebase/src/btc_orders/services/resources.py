"""The HTTP bodies both services serve: the order resource (SPEC 3.3)."""

import uuid

from pydantic import BaseModel, Field

from btc_orders.domain.orders import Currency


class BuyOrderResource(BaseModel):
    """The order resource (SPEC 3.3). Money values are decimal strings."""

    id: uuid.UUID
    created_at: str = Field(examples=["2026-11-24T12:00:00.123456Z"])
    currency: Currency
    amount: str = Field(examples=["123.45"])
    exchange_rate: str = Field(description="fiat per 1 BTC, as Coinbase gave it", examples=["97012.34"])
    bitcoin_amount: str = Field(description="amount / exchange_rate, rounded up to 8 places", examples=["0.00127252"])
    idempotence_key: uuid.UUID
