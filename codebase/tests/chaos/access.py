"""The role the chaos run's processes connect as: an ordinary login role, granted what they need.

A superuser passes every privilege check, so a revoked privilege would never bite; this role
owns nothing (the tables belong to the superuser that migrated them) and holds only the grants
below, which the `*_privilege_revoked` faults take away and give back.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from tests.support.services import admin_connection, sql

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
    with admin_connection() as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    try:
        yield role
    finally:
        with admin_connection() as connection:
            connection.execute(f"DROP ROLE IF EXISTS {role}")


def run_in(database: str, statements: tuple[str, ...], role: str) -> None:
    """Run `statements` (with `{role}` filled in) as the superuser in `database`."""
    sql(database, *(statement.format(role=role) for statement in statements))


def grant(database: str, role: str) -> None:
    run_in(database, GRANTS, role)


def revoke(database: str, role: str) -> None:
    run_in(database, REVOKES, role)


def as_role(url: str, role: str) -> str:
    """`url` with `role` as its user (no password: the test Postgres trusts loopback)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rsplit('@', 1)[-1]}"))
