"""The local Postgres for the benchmarks: URLs, throwaway databases, one-shot statements.

Only 127.0.0.1 is benchmarked (`require_loopback`). `TEST_PG_URL` (default the local superuser with
trust authentication) names the server, as for the tests.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_ADMIN = os.environ.get("TEST_PG_URL", DEFAULT_PG_URL)


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"refusing to benchmark against {host!r}: only 127.0.0.1 is allowed")


def with_database(url: str, dbname: str) -> str:
    """`url` (libpq form) with its database replaced by `dbname`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def sqlalchemy_url(url: str) -> str:
    """The form the services and the migrations take (`postgresql+psycopg2://`)."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url, count=1)


def db_url(name: str, driver: bool = False, server: str = PG_ADMIN) -> str:
    """The database `name` on `server`: libpq form, or SQLAlchemy form with `driver`."""
    url = with_database(server, name)
    return sqlalchemy_url(url) if driver else url


def admin(server: str = PG_ADMIN) -> psycopg2.extensions.connection:
    """An autocommit connection to the server's own database (CREATE/DROP DATABASE)."""
    connection = psycopg2.connect(server, connect_timeout=5, application_name="bench_admin")
    connection.autocommit = True
    return connection


def create_database(name: str, server: str = PG_ADMIN) -> None:
    connection = admin(server)  # no `with connection`: psycopg2 would open a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def drop_database(name: str, server: str = PG_ADMIN) -> None:
    connection = admin(server)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


def execute(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
    """Run one statement on its own autocommit connection; its rows, if it returns any."""
    connection = psycopg2.connect(url, connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()


def scalar(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row of one statement."""
    rows = execute(url, sql, params)
    if not rows:
        raise RuntimeError(f"no row from {sql[:80]!r}")
    return rows[0][0]
