"""The local Postgres of the benchmarks (psycopg 3): URLs, throwaway databases, one-shot statements.

Only 127.0.0.1 is benchmarked (`require_loopback`). `TEST_PG_URL` (default the local superuser with
trust authentication) names the server, as for the tests. URLs stay in the plain `postgresql://`
form, which the services, the migrations, psycopg and pgbench all take.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"refusing to benchmark against {host!r}: only 127.0.0.1 is allowed")


def db_url(name: str, server: str = PG_ADMIN) -> str:
    """The database `name` on `server`."""
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def connect(url: str, name: str = "bench") -> psycopg.Connection[Any]:
    """An autocommit connection (every statement of the benchmarks stands alone)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=5, application_name=name)


def execute(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on its own connection; its rows, if it returns any."""
    with connect(url) as connection:
        cursor = connection.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


def scalar(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    rows = execute(url, sql, params)
    if not rows:
        raise RuntimeError(f"no row from {sql[:80]!r}")
    return rows[0][0]


def create_database(name: str, server: str = PG_ADMIN) -> None:
    execute(server, f'CREATE DATABASE "{name}"')


def drop_database(name: str, server: str = PG_ADMIN) -> None:
    execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
