"""Configuration from the environment (12-factor), validated once at start.

Values come from the process environment, then from `.env` in the working
directory (the defaults of the docker-compose cluster); the environment wins.
A missing or malformed variable stops the process with one line naming it.
"""

import re
import sys
from decimal import Decimal
from typing import Annotated, NoReturn, TypeVar

from pydantic import AnyUrl, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from btc_orders.domain import money

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=3600)]  # durations, never money


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


class WriteModelSettings(BaseServiceSettings):
    write_model_db_url: str = Field(alias="WRITE_MODEL_DB_URL")
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = Field(default=20, alias="DB_POOL_SIZE")

    @field_validator("write_model_db_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        return _postgres_url(value)


class ReadModelSettings(BaseServiceSettings):
    read_model_db_url: str = Field(alias="READ_MODEL_DB_URL")
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = Field(default=20, alias="DB_POOL_SIZE")

    @field_validator("read_model_db_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        return _postgres_url(value)


class BtcPriceSettings(BaseServiceSettings):
    port: Port = Field(default=8779, alias="BTC_PRICE_PORT")
    coinbase_api_url: AnyUrl = Field(default=AnyUrl("https://api.coinbase.com"), alias="COINBASE_API_URL")
    rate_ttl_seconds: Seconds = Field(default=2, alias="RATE_TTL_SECONDS")
    rate_max_age_seconds: Seconds = Field(default=30, alias="RATE_MAX_AGE_SECONDS")
    coinbase_timeout_seconds: Seconds = Field(default=2, alias="COINBASE_TIMEOUT_SECONDS")


class CreateBuyOrderSettings(WriteModelSettings):
    port: Port = Field(default=8777, alias="CREATE_BUY_ORDER_PORT")
    btc_price_url: AnyUrl = Field(alias="BTC_PRICE_URL")
    btc_cap: Decimal = Field(default=Decimal(100), alias="BTC_CAP")
    cap_ledger_slots: Annotated[int, Field(ge=1, le=256)] = Field(default=16, alias="CAP_LEDGER_SLOTS")
    rate_max_age_seconds: Seconds = Field(default=30, alias="RATE_MAX_AGE_SECONDS")
    rate_ttl_seconds: Seconds = Field(default=2, alias="RATE_TTL_SECONDS")
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
            cap = money.parse_rate(str(value))
            money.btc_to_satoshis(cap)
        except money.MoneyError:
            raise ValueError("must be a positive decimal number of BTC with at most 8 decimal places") from None
        return cap

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
    amqp_url: str = Field(alias="AMQP_URL")

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return value


MetricsPort = Annotated[int, Field(ge=0, le=65535, description="Prometheus /metrics port; 0 turns it off")]


class ReadModelSyncSettings(AmqpSettings, ReadModelSettings):
    metrics_port: MetricsPort = Field(default=9102, alias="READ_MODEL_SYNC_METRICS_PORT")
    sync_prefetch: Annotated[int, Field(ge=1, le=10000)] = Field(default=500, alias="SYNC_PREFETCH")
    sync_batch_wait_seconds: Seconds = Field(default=0.01, alias="SYNC_BATCH_WAIT_SECONDS")


class OutboxRelaySettings(AmqpSettings, WriteModelSettings):
    metrics_port: MetricsPort = Field(default=9101, alias="OUTBOX_RELAY_METRICS_PORT")
    outbox_batch_size: Annotated[int, Field(ge=1, le=10000)] = Field(default=500, alias="OUTBOX_BATCH_SIZE")
    outbox_poll_interval_seconds: Seconds = Field(default=0.02, alias="OUTBOX_POLL_INTERVAL_SECONDS")


class MigrationSettings(BaseServiceSettings):
    write_model_db_url: str = Field(alias="WRITE_MODEL_DB_URL")
    read_model_db_url: str = Field(alias="READ_MODEL_DB_URL")

    @field_validator("write_model_db_url", "read_model_db_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        return _postgres_url(value)


def _postgres_url(value: str) -> str:
    if not value.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    return value


SettingsT = TypeVar("SettingsT", bound=BaseServiceSettings)


def load(settings_class: type[SettingsT]) -> SettingsT:
    """Read the settings, or stop the process with one line naming the variable."""
    try:
        return settings_class()
    except ValidationError as error:
        first = error.errors()[0]
        variable = str(first["loc"][0]) if first["loc"] else "configuration"
        _stop(f"configuration error: {variable}: {first['msg']}")


def _stop(line: str) -> NoReturn:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(2)
