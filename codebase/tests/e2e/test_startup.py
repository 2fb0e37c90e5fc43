"""Processes refuse to start, with one clear line, on bad settings or an old schema."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.services import base_env, throwaway_databases


def start(service: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"btc_orders.services.{service}"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({}, "WRITE_MODEL_DB_URL"),
        ({"WRITE_MODEL_DB_URL": "mysql://x", "BTC_PRICE_URL": "http://127.0.0.1:1"}, "WRITE_MODEL_DB_URL"),
        (
            {"WRITE_MODEL_DB_URL": "postgresql://x/y", "BTC_PRICE_URL": "http://127.0.0.1:1", "BTC_CAP": "ten"},
            "BTC_CAP",
        ),
        (
            {"WRITE_MODEL_DB_URL": "postgresql://x/y", "BTC_PRICE_URL": "http://127.0.0.1:1", "BTC_CAP": "0.000000001"},
            "BTC_CAP",
        ),
        (
            {
                "WRITE_MODEL_DB_URL": "postgresql://x/y",
                "BTC_PRICE_URL": "http://127.0.0.1:1",
                "CREATE_BUY_ORDER_PORT": "99999",
            },
            "CREATE_BUY_ORDER_PORT",
        ),
    ],
)
def test_a_missing_or_malformed_setting_stops_the_process_with_one_line_naming_it(
    tmp_path: Path, settings: dict[str, str], variable: str
) -> None:
    result = start("create_buy_order", base_env(**settings), tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}")


def test_an_unmigrated_database_is_refused_with_one_line(tmp_path: Path) -> None:
    with throwaway_databases(migrated=False) as databases:
        result = start("fetch_buy_orders", base_env(READ_MODEL_DB_URL=databases.read_url), tmp_path)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "refusing to start: the read_model database schema is not up to date "
        "(missing migrations: 0001.create-read-model, 0002.stored-documents, 0003.filters-and-notifications); "
        "run the migration process first"
    ]


def test_the_migration_process_migrates_both_databases_and_is_idempotent(tmp_path: Path) -> None:
    with throwaway_databases(migrated=False) as databases:
        env = base_env(WRITE_MODEL_DB_URL=databases.write_url, READ_MODEL_DB_URL=databases.read_url)
        first = start("migration", env, tmp_path)
        again = start("migration", env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert '"applied":["0001.create-write-model"]' in first.stdout
    assert '"applied":[]' in again.stdout


def test_a_database_still_starting_is_waited_for(tmp_path: Path) -> None:
    from tests.support.services import ServiceProcess, admin_connection, free_port

    with throwaway_databases() as databases:
        admin = admin_connection()
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {databases.read_name} ALLOW_CONNECTIONS false")
        port = free_port()
        env = base_env(READ_MODEL_DB_URL=databases.read_url, FETCH_BUY_ORDERS_PORT=str(port))
        service = ServiceProcess("fetch_buy_orders", env, tmp_path / "fetch.log", port).start(wait=False)
        try:
            time.sleep(2)
            assert service.process is not None and service.process.poll() is None, service.logs()
            assert "database_not_ready" in service.logs()
            with admin.cursor() as cursor:
                cursor.execute(f"ALTER DATABASE {databases.read_name} ALLOW_CONNECTIONS true")
            service.wait_healthy(20)
        finally:
            service.stop()
            admin.close()
