"""The migration process reads every database URL form the services read, libpq's multi-host one
included (yoyo's own URL parsing cannot): its connection is opened by psycopg from `db.conninfo`."""

import subprocess
import sys
from pathlib import Path

from btc_orders.adapters import db
from btc_orders.services.migration.__main__ import migrate
from tests.support.services import base_env, throwaway_databases
from tests.support.urls import multi_host


def test_a_multi_host_url_whose_first_host_refuses_is_migrated_on_the_next_host() -> None:
    with throwaway_databases(migrated=False) as databases:
        url = multi_host(databases.write_url)
        assert migrate("write_model", url) == len(db.required_migrations("write_model"))
        db.check_schema(databases.write_url, "write_model")
        assert migrate("write_model", url) == 0, "a second run finds nothing to apply"


def test_the_migration_process_takes_multi_host_urls_in_every_accepted_form(tmp_path: Path) -> None:
    with throwaway_databases(migrated=False) as databases:
        write_url = multi_host(databases.write_url).replace("postgresql://", "postgresql+psycopg://", 1)
        read_url = multi_host(databases.read_url).replace("postgresql://", "postgres://", 1)
        result = subprocess.run(
            [sys.executable, "-m", "btc_orders.services.migration"],
            env=base_env(WRITE_MODEL_DB_URL=write_url, READ_MODEL_DB_URL=read_url),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        db.check_schema(databases.write_url, "write_model")
        db.check_schema(databases.read_url, "read_model")
