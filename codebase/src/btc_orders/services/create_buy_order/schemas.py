"""The request and response bodies of `PUT /buy_order`, and exact JSON parsing.

The body is parsed with `parse_float=JsonNumber`: a JSON number such as
`123.45` reaches validation as its exact source text and never becomes a
float. The amount is then checked by `domain.money.parse_amount`, the same
rule for strings and numbers.
"""

import json
import uuid
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from btc_orders.domain import money
from btc_orders.domain.orders import Currency

AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]{1,2})?$"


def _amount(value: object) -> Decimal:
    try:
        return money.parse_amount(value)
    except money.MoneyError as error:
        raise ValueError(str(error)) from None


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": AMOUNT_PATTERN}, {"type": "number"}],
            "description": "fiat amount, 0 < amount < 1000000000, at most 2 decimal places; "
            "a decimal string is preferred, a JSON number is read exactly",
            "examples": ["123.45"],
        }
    ),
]


class BuyOrderRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"currency": "USD", "amount": "123.45", "idempotence_key": "5fa733ae-82b4-4ac0-8478-35ff30dae879"}
            ]
        },
    )

    currency: Currency = Field(description="fiat currency to pay with")
    amount: Amount
    idempotence_key: uuid.UUID | None = Field(
        default=None,
        description="a UUID naming this order; required here or in the `Idempotency-Key` header",
    )


class BuyOrderResource(BaseModel):
    """The order resource (SPEC 3.3). Money values are decimal strings."""

    id: uuid.UUID
    created_at: str = Field(examples=["2026-11-24T12:00:00.123456Z"])
    currency: Currency
    amount: str = Field(examples=["123.45"])
    exchange_rate: str = Field(description="fiat per 1 BTC, as Coinbase gave it", examples=["97012.34"])
    bitcoin_amount: str = Field(description="amount / exchange_rate, rounded up to 8 places", examples=["0.00127252"])
    idempotence_key: uuid.UUID


class ExactJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(
                    body, parse_float=money.JsonNumber, parse_int=_exact_int, parse_constant=_no_constants
                )
            except json.JSONDecodeError:
                raise
            except (ValueError, RecursionError) as error:
                # invalid UTF-8 (UnicodeDecodeError is a ValueError) or nesting too deep for the parser:
                # a JSONDecodeError makes it FastAPI's 422, not a 400 in a shape of its own
                raise json.JSONDecodeError(f"the body is not valid JSON: {type(error).__name__}", "", 0) from None
            if _has_lone_surrogate(self._json):
                # `"\ud800"` parses to a str no UTF-8 encoder accepts, not even the one writing the 422
                raise json.JSONDecodeError("a string holds a lone UTF-16 surrogate, which is not a character", "", 0)
        return self._json


def _has_lone_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


# Python refuses to turn more than 4300 digits into an int; longer integers stay text and
# fail validation in the field that holds them (an amount has at most 64 characters anyway).
_MAX_INT_DIGITS = 64


def _exact_int(text: str) -> int | str:
    return int(text) if len(text) <= _MAX_INT_DIGITS else money.JsonNumber(text)


def _no_constants(name: str) -> Any:
    # NaN, Infinity and -Infinity are not JSON; Python's parser accepts them unless told.
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


class ExactJsonRoute(APIRoute):
    """A route whose JSON body never passes through a float."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_handler(request: Request) -> Response:
            return await handler(ExactJsonRequest(request.scope, request.receive))

        return exact_handler
