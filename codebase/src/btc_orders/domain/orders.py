"""Buy orders: the one declaration of the order's fields, the currencies, and the idempotence rule.

`FIELDS` declares each field of an order once: its name, its kind (Python type, the SQL types of
the write model's and the read model's columns, how its value is written in JSON), its
description and example for OpenAPI and the event's JSON Schema, and where it appears (the
resource, the event's `order`, the request, the idempotent-replay comparison). Every
representation follows from it by name, never by position: `BuyOrder.resource()` and
`resource_of()`, `BuyOrder.event_order()`, `BuyOrder.from_row()`, the column lists and SQL types
below, the HTTP resource model (`services.resources`) and the event's model (`events`).
`BuyOrder` and `OrderRequest` are written out for the type checker; the import checks that their
attributes are the declared ones.
"""

import enum
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from btc_orders.domain import money


class Currency(enum.StrEnum):
    """Fiat currencies an order can be placed in (ISO 4217 codes)."""

    EUR = "EUR"
    GBP = "GBP"
    USD = "USD"


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`: `2026-11-24T12:00:00.123456Z`."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A client's own reference for an order (SPEC 3.1): printable ASCII, 1 to 64 characters.
CLIENT_ORDER_ID_PATTERN = r"^[ -~]{1,64}$"
CLIENT_ORDER_ID_MAX_LENGTH = 64


def _same(value: Any) -> Any:
    return value


def _decimal_text(formatter: Callable[[Decimal], str]) -> Callable[[Decimal | str], str]:
    """Money as the API writes it: a Decimal through its formatter; a text is already that string
    (the event carries it, the read model stores it as published) and is kept as it is."""

    def to_json(value: Decimal | str) -> str:
        return value if isinstance(value, str) else formatter(value)

    return to_json


@dataclass(frozen=True, eq=False)
class Kind:
    """What a field's value is: its Python type, its columns' SQL types, its JSON form.

    `to_json` takes the Python value (or, for money, the decimal string already written) and gives
    the JSON value the API serves; `from_db` turns a write-model column's value into the Python one.
    Kinds compare by identity: the HTTP and event models map each kind to their own annotation.
    """

    name: str
    python_type: type
    write_type: str  # the write model's `buy_order` column
    read_type: str  # the read model's `buy_order_view` column: money as the event's exact text
    to_json: Callable[[Any], Any]
    from_db: Callable[[Any], Any] = _same


UUID = Kind("uuid", uuid.UUID, "uuid", "uuid", str)
SEQUENCE = Kind("sequence", int, "bigint", "bigint", int)
TIMESTAMP = Kind("timestamp", datetime, "timestamptz", "timestamptz", format_timestamp)
CURRENCY = Kind("currency", Currency, "text", "text", str, Currency)
FIAT = Kind("fiat", Decimal, "numeric(11,2)", "text", _decimal_text(money.format_fiat))
RATE = Kind("rate", Decimal, "numeric", "text", _decimal_text(money.format_rate))
BTC = Kind("btc", Decimal, "numeric(30,8)", "text", _decimal_text(money.format_btc))
CLIENT_REFERENCE = Kind("client reference", str, "text", "text", str)
KINDS = (UUID, SEQUENCE, TIMESTAMP, CURRENCY, FIAT, RATE, BTC, CLIENT_REFERENCE)


@dataclass(frozen=True)
class OrderField:
    """One field of an order: a column of the write model's `buy_order` and of `BuyOrder`.

    Where it appears: `resource` (the API's order resource, SPEC 3.3, in declaration order),
    `event` (the event's `order`: the resource's fields, then the event's own), `request` (what a
    client sends), `replay` (compared when a key is replayed: another value is
    `idempotence_key_reused`), `generated` (the write model's database assigns it on insert).
    A `nullable` field is `None` when absent: served as `null`, optional in the request and in the
    event (an event written before the field existed is still read).
    """

    name: str
    kind: Kind
    description: str | None = None
    example: str | None = None
    resource: bool = True
    event: bool = True
    request: bool = False
    replay: bool = False
    generated: bool = False
    nullable: bool = False

    @property
    def python_type(self) -> Any:
        return self.kind.python_type | None if self.nullable else self.kind.python_type

    def json(self, value: Any) -> Any:
        """The value as the API writes it in JSON."""
        return None if value is None else self.kind.to_json(value)

    def from_db(self, value: Any) -> Any:
        return None if value is None else self.kind.from_db(value)


# The order's fields, the resource's in the order the API serves them (SPEC 3.3).
FIELDS = (
    OrderField("id", UUID),
    OrderField("created_at", TIMESTAMP, example="2026-11-24T12:00:00.123456Z", generated=True),
    OrderField("currency", CURRENCY, request=True, replay=True),
    OrderField("amount", FIAT, example="123.45", request=True, replay=True),
    OrderField("exchange_rate", RATE, description="fiat per 1 BTC, as Coinbase gave it", example="97012.34"),
    OrderField(
        "bitcoin_amount", BTC, description="amount / exchange_rate, rounded up to 8 places", example="0.00127252"
    ),
    OrderField("idempotence_key", UUID, request=True),
    OrderField(
        "client_order_id",
        CLIENT_REFERENCE,
        description="the client's own reference for the order: printable ASCII, 1 to 64 characters; "
        "null when the order was placed without one",
        example="shop-42/A",
        request=True,
        replay=True,
        nullable=True,
    ),
    OrderField("sequence", SEQUENCE, resource=False, generated=True),
)
CLIENT_ORDER_ID = next(field for field in FIELDS if field.name == "client_order_id")


def resource_fields(order_fields: tuple[OrderField, ...] = FIELDS) -> tuple[OrderField, ...]:
    """The resource's fields, in the order the API serves them."""
    return tuple(field for field in order_fields if field.resource)


def event_fields(order_fields: tuple[OrderField, ...] = FIELDS) -> tuple[OrderField, ...]:
    """The event's `order`: the resource's fields, then those only the event carries (`sequence`)."""
    return (
        *(field for field in order_fields if field.resource and field.event),
        *(field for field in order_fields if field.event and not field.resource),
    )


_RESOURCE = resource_fields()
_EVENT = event_fields()
# (name, how its value is written in JSON) of each, for the hot paths (a 201's body, an event)
_RESOURCE_JSON = tuple((field.name, field.json if field.nullable else field.kind.to_json) for field in _RESOURCE)
_EVENT_JSON = tuple((field.name, field.json if field.nullable else field.kind.to_json) for field in _EVENT)
# The fields that may be absent (`nullable`): a mapping without one holds None for it.
OPTIONAL_FIELDS = frozenset(field.name for field in FIELDS if field.nullable)

# Names, for the code that selects, compares or serves fields.
RESOURCE_FIELDS = tuple(field.name for field in _RESOURCE)
EVENT_FIELDS = tuple(field.name for field in _EVENT)
REQUEST_FIELDS = tuple(field.name for field in FIELDS if field.request)
REPLAY_FIELDS = tuple(field.name for field in FIELDS if field.replay)
# The write model's `buy_order`: every field is a column; a reader selects `COLUMNS`, an insert
# writes `INSERTED_COLUMNS` (the database assigns the others), each cast to its `WRITE_TYPES`.
COLUMNS = tuple(field.name for field in FIELDS)
INSERTED_COLUMNS = tuple(field.name for field in FIELDS if not field.generated)
WRITE_TYPES = {field.name: field.kind.write_type for field in FIELDS}
# The read model's `buy_order_view` holds the event's `order`: its columns and their SQL types.
READ_TYPES = {field.name: field.kind.read_type for field in _EVENT}


def columns(alias: str | None = None) -> str:
    """`COLUMNS` for a SELECT list, each prefixed with `alias.` for a join."""
    return ", ".join(f"{alias}.{name}" if alias else name for name in COLUMNS)


def value_of(values: Mapping[str, Any], name: str) -> Any:
    """The field `name` of a name -> value mapping: None for an optional field it lacks (an event
    from before the field existed), KeyError for any other."""
    return values.get(name) if name in OPTIONAL_FIELDS else values[name]


def resource_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """The order resource (SPEC 3.3) from a name -> value mapping of (at least) its fields: a
    `BuyOrder`'s values, or a read-model row's (money already the API's decimal strings)."""
    return {name: to_json(value_of(values, name)) for name, to_json in _RESOURCE_JSON}


def event_order_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """The event's `order` (SPEC 6) from a name -> value mapping of its fields, as `resource_of`:
    what a read-model row must equal, field by field, to be the projection of the stored order."""
    return {name: to_json(value_of(values, name)) for name, to_json in _EVENT_JSON}


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a client asks for: validated, not yet priced (the declared `request` fields)."""

    currency: Currency
    amount: Decimal
    idempotence_key: uuid.UUID
    client_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class BuyOrder:
    """A stored order (every declared field). Orders are immutable once stored."""

    id: uuid.UUID
    sequence: int
    created_at: datetime
    currency: Currency
    amount: Decimal
    exchange_rate: Decimal
    bitcoin_amount: Decimal
    idempotence_key: uuid.UUID
    client_order_id: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "BuyOrder":
        """The order from a name -> value mapping holding its `COLUMNS` (psycopg's `dict_row`,
        SQLAlchemy's `row._mapping`); other keys are ignored."""
        return cls(**{field.name: field.from_db(row[field.name]) for field in FIELDS})

    def matches(self, request: OrderRequest) -> bool:
        """The idempotence rule: a key may be replayed only with the same order (`REPLAY_FIELDS`).

        Amounts compare by value, so `"10.5"` replays an order stored as `10.50`; an order placed
        without a `client_order_id` is replayed only without one.
        """
        return all(getattr(self, name) == getattr(request, name) for name in REPLAY_FIELDS)

    def resource(self) -> dict[str, Any]:
        """The order resource of the API (SPEC 3.3): money as decimal strings."""
        return {name: to_json(getattr(self, name)) for name, to_json in _RESOURCE_JSON}

    def event_order(self) -> dict[str, Any]:
        """The event's `order` (SPEC 6): the resource, then the event's own fields."""
        return {name: to_json(getattr(self, name)) for name, to_json in _EVENT_JSON}


def new_order(
    request: OrderRequest, order_id: uuid.UUID, exchange_rate: Decimal, bitcoin_amount: Decimal
) -> dict[str, Any]:
    """What an insert writes of a priced request (`INSERTED_COLUMNS`), by name: the request's fields,
    and what the service assigns. With the database's (`sequence`, `created_at`): `BuyOrder.from_row`."""
    return {name: getattr(request, name) for name in REQUEST_FIELDS} | {
        "id": order_id,
        "exchange_rate": exchange_rate,
        "bitcoin_amount": bitcoin_amount,
    }


def _agrees(cls: type, order_fields: tuple[OrderField, ...]) -> None:
    """`cls`'s attributes are exactly `order_fields`, each of its declared Python type."""
    hints = typing.get_type_hints(cls)
    attributes = {attribute.name: hints[attribute.name] for attribute in fields(cls)}
    expected = {field.name: field.python_type for field in order_fields}
    if attributes != expected:
        raise TypeError(f"{cls.__name__}'s attributes {attributes} are not the declared fields {expected}")


_agrees(BuyOrder, FIELDS)
_agrees(OrderRequest, tuple(field for field in FIELDS if field.request))
