"""The role the chaos run's processes connect as: an ordinary login role, granted what they need.

A superuser passes every privilege check, so a revoked privilege would never bite; this role
owns nothing (the tables belong to the superuser that migrated them) and holds only the grants
below, which the `*_privilege_revoked` faults take away and give back.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from sqlalchemy.engine import make_url

from tests.support.services import admin_connection, dsn

GRANTS = (
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
)
REVOKES = (
    "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
    "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
)


@contextmanager
def service_role() -> Iterator[str]:
    """A fresh login role (no superuser, no ownership) for one run; dropped afterwards.

    Enter it before the databases it is granted on, so that they are dropped first.
    """
    role = f"chaos_{uuid.uuid4().hex[:12]}"
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    connection.close()
    try:
        yield role
    finally:
        connection = admin_connection()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP ROLE IF EXISTS {role}")
        connection.close()


def run_in(database: str, statements: tuple[str, ...], role: str) -> None:
    """Run `statements` (with `{role}` filled in) as the superuser in `database`."""
    connection = psycopg2.connect(dsn(database))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement.format(role=role))
    finally:
        connection.close()


def grant(database: str, role: str) -> None:
    run_in(database, GRANTS, role)


def revoke(database: str, role: str) -> None:
    run_in(database, REVOKES, role)


def as_role(url: str, role: str) -> str:
    """`url` with `role` as its user (no password: the test Postgres trusts loopback)."""
    return make_url(url).set(username=role, password=None).render_as_string(hide_password=False)
