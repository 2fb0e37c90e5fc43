"""The throwaway stores of a run: a write-model and a read-model database on the local Postgres,
migrated by the tree under test, with the naive one-cap-row table of bench/pgbench/naive.sql beside,
and (with `vhost`) a RabbitMQ vhost; all dropped and deleted afterwards whatever happened.

    with stores(tree, f"bench_w_{tag}", f"bench_r_{tag}", f"bench_{tag}"):
        ...  # pg.db_url("bench_w_...") for the services and pgbench
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from benchkit import log, pg
from benchkit.services import Tree

NAIVE_CAP_TABLE = (
    "CREATE TABLE bench_naive_cap (id int PRIMARY KEY, used_satoshis bigint NOT NULL, cap_satoshis bigint NOT NULL);"
    "INSERT INTO bench_naive_cap VALUES (1, 0, 2100000000000000)"
)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


@contextlib.contextmanager
def stores(tree: Tree, write_db: str, read_db: str, vhost: str = "") -> Iterator[None]:
    pg.require_loopback(pg.PG_ADMIN)
    made: list[str] = []
    try:
        for name in (write_db, read_db):
            pg.create_database(name)
            made.append(name)
        if vhost:
            rabbitmqctl("add_vhost", vhost)
            rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        tree.migrate(pg.db_url(write_db), pg.db_url(read_db))
        pg.execute(pg.db_url(write_db), NAIVE_CAP_TABLE)
        yield
    finally:
        for name in made:
            with contextlib.suppress(Exception):
                pg.drop_database(name)
        if vhost:
            with contextlib.suppress(Exception):
                rabbitmqctl("delete_vhost", vhost)
        log(f"cleaned up (databases {', '.join(made) or 'none'}{', vhost ' + vhost if vhost else ''})")
