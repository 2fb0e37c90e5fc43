"""`db.is_outage` decides by what a database error means (its SQLSTATE), not by its exception class.

Each error here is raised by a real Postgres (`RAISE SQLSTATE`), so the driver builds it as it
would in production: wrapped by SQLAlchemy (the synchronous processes' engine), or raw from a
psycopg connection (the asynchronous processes' pool).
"""

from collections.abc import Iterator

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from btc_orders.adapters import db
from btc_orders.domain.errors import ServiceUnavailable
from btc_orders.services.http_service import http_app
from btc_orders.settings import BaseServiceSettings
from tests.support.services import PG_ADMIN_URL, admin_connection

OUTAGES = {
    "08006": "connection failure",
    "08001": "cannot establish a connection",
    "28P01": "password authentication failed",
    "53000": "insufficient resources",
    "53100": "disk full",
    "53200": "out of memory",
    "53300": "too many connections",
    "57P01": "admin shutdown",
    "57P02": "crash shutdown",
    "57P03": "cannot connect now",
    "57014": "statement timeout",
    "58030": "I/O error",
    "XX001": "data corrupted",
    "25006": "read-only transaction",
    "25P03": "idle-in-transaction timeout",
    "40001": "serialization failure",
    "40P01": "deadlock",
    "55P03": "lock not available",
    "42501": "privilege revoked",
    "42P01": "table missing",
    "3D000": "database missing",
}
NOT_OUTAGES = {
    "22003": "numeric value out of range: the statement's data",
    "22P02": "invalid text representation: the statement's data",
    "23505": "unique violation: the statement's data",
    "23514": "check violation: the statement's data",
    "40002": "deferred constraint violation: the statement's data",
    "42601": "syntax error: a bug",
    "42883": "undefined function: a bug",
    "25P02": "in failed transaction: a bug",
    "P0001": "raised by a trigger (buy orders are immutable): a bug",
}


def _raise(code: str) -> str:
    return f"DO $$ BEGIN RAISE SQLSTATE '{code}'; END $$"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    created = db.create_engine(PG_ADMIN_URL, 1, "test_outage_classification")
    yield created
    created.dispose()


def _wrapped(engine: Engine, code: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as raised, engine.connect() as connection:
        connection.execute(text(_raise(code)))
    return raised.value


def _raw(code: str) -> psycopg.Error:
    with admin_connection() as connection, pytest.raises(psycopg.Error) as raised:
        connection.execute(_raise(code))
    return raised.value


@pytest.mark.parametrize("code", sorted(OUTAGES), ids=lambda code: f"{code} {OUTAGES[code]}")
def test_an_error_that_says_the_database_cannot_serve_is_an_outage(engine: Engine, code: str) -> None:
    wrapped, raw = _wrapped(engine, code), _raw(code)
    assert db.sqlstate(wrapped) == db.sqlstate(raw) == code
    assert db.is_outage(wrapped) and db.is_outage(raw)
    for error in (wrapped, raw):
        with pytest.raises(ServiceUnavailable, match="write-model database"), db.unavailable_on_outage("write-model"):
            raise error


@pytest.mark.parametrize("code", sorted(NOT_OUTAGES), ids=lambda code: f"{code} {NOT_OUTAGES[code]}")
def test_an_error_about_the_statement_or_a_bug_is_not_an_outage(engine: Engine, code: str) -> None:
    wrapped, raw = _wrapped(engine, code), _raw(code)
    assert not db.is_outage(wrapped) and not db.is_outage(raw)
    for error in (wrapped, raw):
        with pytest.raises(type(error)), db.unavailable_on_outage("write-model"):
            raise error


def test_a_read_only_database_is_told_as_such() -> None:
    raw = _raw("25006")
    assert isinstance(raw, psycopg.InternalError)  # not an OperationalError: the class says nothing
    with pytest.raises(ServiceUnavailable, match="read-only"), db.unavailable_on_outage("write-model"):
        raise raw


class _NoAdapters:
    async def start(self) -> None:
        pass

    async def readiness(self) -> dict[str, bool]:
        return {}

    async def close(self) -> None:
        pass


def _app_raising(code: str) -> FastAPI:
    """An app of the suite (as every HTTP service's is made) whose one route lets a database error
    escape every adapter."""

    async def bootstrap(_settings: BaseServiceSettings) -> _NoAdapters:
        return _NoAdapters()

    app = http_app("test", "a route that fails", BaseServiceSettings(), bootstrap)

    @app.get("/fail")
    def fail() -> None:
        raise _raw(code)  # the error exactly as the database raised it

    return app


@pytest.mark.parametrize(
    ("code", "status"), [("25006", 503), ("53300", 503), ("40P01", 503), ("42601", 500), ("23505", 500)]
)
def test_the_http_error_table_maps_an_escaped_database_error_by_what_it_means(code: str, status: int) -> None:
    with TestClient(_app_raising(code), raise_server_exceptions=False) as client:
        response = client.get("/fail")
    assert response.status_code == status, response.text
    if status == 503:
        assert response.json()["detail"]["code"] == "service_unavailable"
        assert int(response.headers["retry-after"]) >= 1
    else:
        assert response.json()["detail"]["code"] == "internal_error"


@pytest.mark.parametrize(
    ("code", "told"),
    [
        ("53300", "too many connections"),
        ("53100", "out of resources"),
        ("57P01", "unavailable"),
        ("40P01", "unavailable"),
    ],
)
def test_the_client_is_told_what_kind_of_outage_it_is(code: str, told: str) -> None:
    with pytest.raises(ServiceUnavailable, match=told), db.unavailable_on_outage("write-model"):
        raise _raw(code)
