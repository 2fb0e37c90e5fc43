"""Configuration from the environment (12-factor), validated once at start.

Values come from the process environment, then from `.env` in the working
directory (the defaults of the docker-compose cluster); the environment wins.
A missing or malformed variable stops the process with one line naming it.
"""

import re
import sys
from decimal import Decimal
from typing import Annotated, NoReturn, Self, TypeVar

import pika
from pydantic import AfterValidator, Field, HttpUrl, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from btc_orders import urls
from btc_orders.adapters import db
from btc_orders.domain import cap, money

# The types every setting of its kind shares: each rule is written once.
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=3600)]  # durations, never money
PoolSize = Annotated[int, Field(ge=1, le=200)]
# postgresql://, postgres://, postgresql+psycopg:// (or +psycopg2://), libpq's multi-host form included,
# kept as the postgresql:// URL libpq reads (db.conninfo)
PostgresUrl = Annotated[str, AfterValidator(db.conninfo)]


def _amqp_url(value: str) -> str:
    """One amqp(s):// URL or a `;`-separated list of them (a cluster's nodes), each read by pika's own
    parser (a bad port or option fails here, not at connect); kept without blanks around the `;`."""
    brokers = urls.elements(value)
    for position, element in enumerate(brokers, 1):
        which = f"element {position} of the list ({urls.mask(element)!r})" if len(brokers) > 1 else None
        if not element.startswith(("amqp://", "amqps://")):
            what = f"{which} is not" if which else "must be"
            raise ValueError(f"{what} an amqp:// or amqps:// URL (a list separates URLs with ';')")
        try:
            pika.URLParameters(element)
        except Exception as error:  # pika's parser raises ValueError, KeyError, ... for a bad part
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            named = which or repr(urls.mask(element))
            raise ValueError(f"{named} is not a valid AMQP URL: {urls.mask(reason)}") from None
    return urls.LIST_SEPARATOR.join(brokers)


AmqpUrl = Annotated[str, AfterValidator(_amqp_url)]


class BaseServiceSettings(BaseSettings):
    """What every process reads: logging."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    fluentd_host: str | None = Field(default=None, alias="FLUENTD_HOST")
    fluentd_port: Port = Field(default=24224, alias="FLUENTD_PORT")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("fluentd_host")
    @classmethod
    def _empty_host_is_none(cls, value: str | None) -> str | None:
        return value or None


# Mixins: each setting that several processes read is declared once, here.
class WriteModelUrl(BaseServiceSettings):
    write_model_db_url: PostgresUrl = Field(alias="WRITE_MODEL_DB_URL")


class ReadModelUrl(BaseServiceSettings):
    read_model_db_url: PostgresUrl = Field(alias="READ_MODEL_DB_URL")


class PoolSettings(BaseServiceSettings):
    db_pool_size: PoolSize = Field(default=20, alias="DB_POOL_SIZE")


class RateAgeSettings(BaseServiceSettings):
    """How long a rate may be reused (`RATE_TTL_SECONDS`) and how old it may be at most."""

    rate_ttl_seconds: Seconds = Field(default=2, alias="RATE_TTL_SECONDS")
    rate_max_age_seconds: Seconds = Field(default=30, alias="RATE_MAX_AGE_SECONDS")


class WriteModelSettings(PoolSettings, WriteModelUrl):
    pass


class ReadModelSettings(PoolSettings, ReadModelUrl):
    pass


class BtcPriceSettings(RateAgeSettings):
    port: Port = Field(default=8779, alias="BTC_PRICE_PORT")
    coinbase_api_url: HttpUrl = Field(default=HttpUrl("https://api.coinbase.com"), alias="COINBASE_API_URL")
    coinbase_timeout_seconds: Seconds = Field(default=2, alias="COINBASE_TIMEOUT_SECONDS")

    @model_validator(mode="after")
    def _ttl_within_max_age(self) -> Self:
        # The cache serves a rate for its TTL: a TTL past the maximum age would serve a rate too old.
        if self.rate_ttl_seconds > self.rate_max_age_seconds:
            raise ValueError(
                f"RATE_TTL_SECONDS ({self.rate_ttl_seconds:g}) must not exceed RATE_MAX_AGE_SECONDS "
                f"({self.rate_max_age_seconds:g}): a cached rate would be served past its maximum age"
            )
        return self


class CreateBuyOrderSettings(RateAgeSettings, WriteModelSettings):
    """The rate ages are btc_price's too; here the TTL is how long the client reuses a rate (capped at
    the maximum age by `BtcPriceClient`, so no cross-variable rule)."""

    port: Port = Field(default=8777, alias="CREATE_BUY_ORDER_PORT")
    btc_price_url: HttpUrl = Field(alias="BTC_PRICE_URL")
    btc_cap: Decimal = Field(default=Decimal(100), alias="BTC_CAP")
    cap_ledger_slots: Annotated[int, Field(ge=1, le=256)] = Field(default=16, alias="CAP_LEDGER_SLOTS")
    btc_price_timeout_seconds: Seconds = Field(default=3, alias="BTC_PRICE_TIMEOUT_SECONDS")
    # where clients reach GET /buy_orders/{id}: empty (the gateway's single origin) makes the 201's
    # Location relative (`/buy_orders/{id}`); `http://localhost:8778` makes it absolute under it
    public_fetch_url: str = Field(default="", alias="PUBLIC_FETCH_URL")

    @field_validator("public_fetch_url")
    @classmethod
    def _origin_or_empty(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be empty or an http:// or https:// URL such as http://localhost:8778")
        return value.rstrip("/")

    @field_validator("btc_cap", mode="before")
    @classmethod
    def _exact_cap(cls, value: object) -> Decimal:
        if isinstance(value, Decimal):
            return value
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("must be a decimal number of BTC such as 100")
        try:
            btc = money.parse_rate(str(value))
            satoshis = money.btc_to_satoshis(btc)
        except money.MoneyError:
            raise ValueError("must be a positive decimal number of BTC with at most 8 decimal places") from None
        if satoshis > cap.MAX_CAP_SATOSHIS:
            raise ValueError(
                f"must be at most {money.format_btc(money.satoshis_to_btc(cap.MAX_CAP_SATOSHIS))} BTC "
                "(the most the cap ledger's bigint satoshi columns hold)"
            )
        return btc

    @property
    def btc_cap_satoshis(self) -> int:
        return money.btc_to_satoshis(self.btc_cap)


class FetchBuyOrdersSettings(ReadModelSettings):
    port: Port = Field(default=8778, alias="FETCH_BUY_ORDERS_PORT")
    # `Prefer: wait=N` on GET /buy_orders/{id}: at most this long, and at most this many waiting
    # requests per process (past it, answered at once)
    read_your_write_max_wait_seconds: Annotated[int, Field(ge=0, le=300)] = Field(
        default=10, alias="READ_YOUR_WRITE_MAX_WAIT_SECONDS"
    )
    read_your_write_max_waiters: Annotated[int, Field(ge=0, le=100000)] = Field(
        default=1000, alias="READ_YOUR_WRITE_MAX_WAITERS"
    )


class AmqpSettings(BaseServiceSettings):
    amqp_url: AmqpUrl = Field(alias="AMQP_URL")


MetricsPort = Annotated[int, Field(ge=0, le=65535, description="Prometheus /metrics port; 0 turns it off")]


class ReadModelSyncSettings(AmqpSettings, ReadModelSettings):
    metrics_port: MetricsPort = Field(default=9102, alias="READ_MODEL_SYNC_METRICS_PORT")
    sync_prefetch: Annotated[int, Field(ge=1, le=10000)] = Field(default=500, alias="SYNC_PREFETCH")
    sync_batch_wait_seconds: Seconds = Field(default=0.01, alias="SYNC_BATCH_WAIT_SECONDS")


class OutboxRelaySettings(AmqpSettings, WriteModelSettings):
    metrics_port: MetricsPort = Field(default=9101, alias="OUTBOX_RELAY_METRICS_PORT")
    outbox_batch_size: Annotated[int, Field(ge=1, le=10000)] = Field(default=500, alias="OUTBOX_BATCH_SIZE")
    outbox_poll_interval_seconds: Seconds = Field(default=0.02, alias="OUTBOX_POLL_INTERVAL_SECONDS")
    # Sent outbox rows are deleted this long after the broker confirmed them (default 7 days).
    outbox_retention_seconds: Annotated[int, Field(ge=60, le=366 * 24 * 3600)] = Field(
        default=7 * 24 * 3600, alias="OUTBOX_RETENTION_SECONDS"
    )


class MigrationSettings(ReadModelUrl, WriteModelUrl):
    pass


SettingsT = TypeVar("SettingsT", bound=BaseServiceSettings)


def load(settings_class: type[SettingsT]) -> SettingsT:
    """Read the settings, or stop the process with one line naming the variable."""
    try:
        return settings_class()
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["loc"]:
            _stop(f"configuration error: {first['loc'][0]}: {message}")
        _stop(f"configuration error: {message}")  # a rule across variables names them itself


def _stop(line: str) -> NoReturn:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(2)
