"""The throwaway stores of a benchmark run: a write-model and a read-model database on the local
Postgres (migrated, with the naive one-cap-row table of bench/pgbench/naive.sql beside) and a
RabbitMQ vhost, all dropped and deleted afterwards whatever happened.

    with stores(f"bench_w_{tag}", f"bench_r_{tag}", f"bench_{tag}"):
        ...  # pg.db_url("bench_w_...", driver=True) for the services
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from benchkit import log, pg

NAIVE_CAP_TABLE = (
    "CREATE TABLE bench_naive_cap (id int PRIMARY KEY, used_satoshis bigint NOT NULL, cap_satoshis bigint NOT NULL);"
    "INSERT INTO bench_naive_cap VALUES (1, 0, 2100000000000000)"
)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


@contextlib.contextmanager
def stores(write_db: str, read_db: str, vhost: str) -> Iterator[None]:
    pg.create_database(write_db)
    try:
        pg.create_database(read_db)
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        from btc_orders.services.migration.__main__ import migrate

        migrate("write_model", pg.db_url(write_db, True))
        migrate("read_model", pg.db_url(read_db, True))
        pg.execute(pg.db_url(write_db), NAIVE_CAP_TABLE)
        yield
    finally:
        for name in (write_db, read_db):
            with contextlib.suppress(Exception):
                pg.drop_database(name)
        with contextlib.suppress(Exception):
            rabbitmqctl("delete_vhost", vhost)
        log(f"cleaned up (databases {write_db}, {read_db}, vhost {vhost})")
