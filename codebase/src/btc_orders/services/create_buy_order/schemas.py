"""The request and response bodies of `PUT /buy_order`, and exact JSON parsing.

The body is parsed with `parse_float=JsonNumber`: a JSON number such as
`123.45` reaches validation as its exact source text and never becomes a
float. The amount is then checked by `domain.money.parse_amount`, the same
rule for strings and numbers. A key given twice is refused (422 naming it):
an ambiguous money request is never guessed at. A body that is not sent as
JSON (another `Content-Type`) is a 415; no `Content-Type` at all is read as JSON.
"""

import email.message
import json
import uuid
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException

from btc_orders.domain import money, orders
from btc_orders.domain.orders import Currency
from btc_orders.services.resources import ClientOrderId

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
    client_order_id: ClientOrderId | None = Field(
        default=None,
        description="optional: your own reference for the order, printable ASCII, 1 to 64 characters; "
        "returned in the order, and part of what a replay of the key must repeat",
        examples=[orders.CLIENT_ORDER_ID.example],
    )


def _structured_field_string(value: object) -> object:
    """The `Idempotency-Key` header bare (`5fa7…`) or as an RFC 8941 sf-string (`"5fa7…"`, as the
    IETF draft writes it): the string inside the quotes, escapes undone; anything else as given,
    for the UUID rule to refuse."""
    if not isinstance(value, str):
        return value
    text = value.strip(" ")
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    inner, unescaped, index = text[1:-1], [], 0
    while index < len(inner):
        char = inner[index]
        if char == "\\" and index + 1 < len(inner) and inner[index + 1] in '"\\':
            unescaped.append(inner[index + 1])
            index += 2
        elif char in '"\\' or not " " <= char <= "~":
            return value  # not an sf-string: refused as a UUID
        else:
            unescaped.append(char)
            index += 1
    return "".join(unescaped)


IdempotencyKeyHeader = Annotated[
    uuid.UUID | None,
    BeforeValidator(_structured_field_string),
    WithJsonSchema(
        {
            "type": "string",
            "description": "a UUID, bare or as a structured-field string (RFC 8941) in quotes",
            "examples": ["5fa733ae-82b4-4ac0-8478-35ff30dae879", '"5fa733ae-82b4-4ac0-8478-35ff30dae879"'],
        }
    ),
]


class DuplicateKey(Exception):
    """A key that appears twice in one JSON object of the body."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return document


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` (any parameters) or `application/*+json`; no content type counts as JSON."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def exact_json(body: bytes) -> Any:
    """The JSON document `body`, numbers exact, each key once: `json.JSONDecodeError` for
    anything that is not valid JSON (invalid UTF-8, a lone surrogate, NaN, nesting too deep),
    `DuplicateKey` for a key given twice in one object."""
    try:
        parsed = json.loads(
            body,
            parse_float=money.JsonNumber,
            parse_int=_exact_int,
            parse_constant=_no_constants,
            object_pairs_hook=_refuse_duplicate_keys,
        )
    except (json.JSONDecodeError, DuplicateKey):
        raise
    except (ValueError, RecursionError) as error:
        # invalid UTF-8 (UnicodeDecodeError is a ValueError) or nesting too deep for the parser:
        # a JSONDecodeError makes it FastAPI's 422, not a 400 in a shape of its own
        raise json.JSONDecodeError(f"the body is not valid JSON: {type(error).__name__}", "", 0) from None
    if _has_lone_surrogate(parsed):
        # `"\ud800"` parses to a str no UTF-8 encoder accepts, not even the one writing the 422
        raise json.JSONDecodeError("a string holds a lone UTF-16 surrogate, which is not a character", "", 0)
    return parsed


class ExactJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = exact_json(await self.body())  # only a body that passed every check is kept
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


UNSUPPORTED_MEDIA_TYPE_MESSAGE = "send the body as JSON, with the header Content-Type: application/json"


class ExactJsonRoute(APIRoute):
    """A route whose JSON body never passes through a float, is sent as JSON, and names each key once.

    Use it on a router made with `strict_content_type=False`: a body without a `Content-Type`
    is read as JSON (the original curl form of the API sends none).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_handler(request: Request) -> Response:
            exact = ExactJsonRequest(request.scope, request.receive)
            content_type = exact.headers.get("content-type")
            if not is_json_media_type(content_type):
                raise HTTPException(415, f"{UNSUPPORTED_MEDIA_TYPE_MESSAGE} (not {(content_type or '')[:100]})")
            if await exact.body():
                try:
                    await exact.json()
                except DuplicateKey as duplicate:
                    raise RequestValidationError([_duplicate_key_error(duplicate.key)]) from None
                except json.JSONDecodeError:
                    pass  # FastAPI answers it (422 `json_invalid`) when it reads the body
            return await handler(exact)

        return exact_handler


def _duplicate_key_error(key: str) -> dict[str, Any]:
    return {
        "type": "duplicate_key",
        "loc": ("body", key[:100]),
        "msg": f"the key {key[:100]!r} appears more than once in the body: send each key once",
        "input": key[:100],
    }
