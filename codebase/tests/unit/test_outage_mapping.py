"""Which database errors are an outage (a 503 the client may retry) and which are bugs."""

import psycopg
import psycopg_pool
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from btc_orders.adapters import db
from btc_orders.adapters.db import unavailable_on_outage
from btc_orders.domain.errors import ServiceUnavailable


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly")),
        # raised unwrapped by the pool when it resets a connection the server has just dropped
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("connection already closed"),
        PoolTimeout("QueuePool limit of size 20 overflow 0 reached"),
        psycopg_pool.PoolTimeout("couldn't get a connection after 3.00 sec"),
    ],
    ids=["wrapped", "unwrapped at checkin", "unwrapped, already closed", "pool exhausted", "async pool exhausted"],
)
def test_a_lost_connection_or_an_empty_pool_is_a_503(error: Exception) -> None:
    with pytest.raises(ServiceUnavailable, match="write-model database"), unavailable_on_outage("write-model"):
        raise error


def test_a_constraint_violation_is_not_an_outage() -> None:
    error = IntegrityError("INSERT", {}, psycopg.IntegrityError("duplicate key"))
    with pytest.raises(IntegrityError), unavailable_on_outage("write-model"):
        raise error


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("could not connect to server: Connection refused"),
        psycopg.InterfaceError("connection already closed"),
        OperationalError("SELECT 1", {}, psycopg.OperationalError("timeout expired")),
        PoolTimeout("QueuePool limit of size 20 overflow 0 reached"),
        psycopg_pool.PoolTimeout("couldn't get a connection after 3.00 sec"),
    ],
    ids=["refused", "closed", "connect timeout", "pool exhausted", "async pool exhausted"],
)
def test_a_driver_error_without_sqlstate_about_the_connection_is_an_outage(error: Exception) -> None:
    assert db.sqlstate(error) is None
    assert db.is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        ProgrammingError("SELECT %(x)s", {}, psycopg.ProgrammingError("can't adapt type 'object'")),
        psycopg.DataError("invalid input"),
        ValueError("not a database error"),
        RuntimeError("a bug"),
    ],
    ids=["driver programming error", "raw data error", "ValueError", "RuntimeError"],
)
def test_an_error_without_sqlstate_that_is_not_about_the_connection_is_not_an_outage(error: Exception) -> None:
    assert not db.is_outage(error)
