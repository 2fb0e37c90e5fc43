"""Processes refuse to start, with one clear line, on bad settings or an old schema."""

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from btc_orders.adapters.db import required_migrations
from tests.support.services import (
    ServiceProcess,
    admin_connection,
    base_env,
    free_port,
    throwaway_databases,
)

REPO = Path(__file__).resolve().parents[3]
GUNICORN_CONF = REPO / "docker" / "gunicorn.conf.py"


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
        # more than the ledger's bigint satoshi columns hold: refused before any database is touched
        (
            {
                "WRITE_MODEL_DB_URL": "postgresql://x/y",
                "BTC_PRICE_URL": "http://127.0.0.1:1",
                "BTC_CAP": "100000000000",
            },
            "BTC_CAP",
        ),
        (
            {"WRITE_MODEL_DB_URL": "postgresql+asyncpg://x/y", "BTC_PRICE_URL": "http://127.0.0.1:1"},
            "WRITE_MODEL_DB_URL",
        ),
        (
            {"WRITE_MODEL_DB_URL": "postgresql://x:notaport/y", "BTC_PRICE_URL": "http://127.0.0.1:1"},
            "WRITE_MODEL_DB_URL",
        ),
        ({"WRITE_MODEL_DB_URL": "postgresql://x/y", "BTC_PRICE_URL": "ftp://127.0.0.1:1"}, "BTC_PRICE_URL"),
        (
            {"WRITE_MODEL_DB_URL": "postgresql://x/y", "BTC_PRICE_URL": "http://127.0.0.1:1", "DB_POOL_SIZE": "0"},
            "DB_POOL_SIZE",
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
        env = base_env(READ_MODEL_DB_URL=databases.read_url, FETCH_BUY_ORDERS_PORT=str(free_port()))
        result = start("fetch_buy_orders", env, tmp_path)  # a free port: the default may be taken here
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "refusing to start: the read_model database schema is not up to date "
        f"(missing migrations: {', '.join(sorted(required_migrations('read_model')))}); "
        "run the migration process first"
    ]


def test_the_migration_process_migrates_both_databases_and_is_idempotent(tmp_path: Path) -> None:
    with throwaway_databases(migrated=False) as databases:
        env = base_env(WRITE_MODEL_DB_URL=databases.write_url, READ_MODEL_DB_URL=databases.read_url)
        first = start("migration", env, tmp_path)
        again = start("migration", env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    every_write_model_migration = ",".join(f'"{name}"' for name in sorted(required_migrations("write_model")))
    assert f'"applied":[{every_write_model_migration}]' in first.stdout
    assert '"applied":[]' in again.stdout


def test_a_database_still_starting_is_waited_for(tmp_path: Path) -> None:
    from tests.support.services import ServiceProcess, admin_connection, free_port, wait_until

    with throwaway_databases() as databases:
        admin = admin_connection()
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {databases.read_name} ALLOW_CONNECTIONS false")
        port = free_port()
        env = base_env(READ_MODEL_DB_URL=databases.read_url, FETCH_BUY_ORDERS_PORT=str(port))
        service = ServiceProcess("fetch_buy_orders", env, tmp_path / "fetch.log", port).start(wait=False)
        try:
            # It says it waits (however long its start takes on a busy machine), and still runs.
            wait_until(lambda: "database_not_ready" in service.logs(), 30, 0.2, "database_not_ready in its log")
            assert service.process is not None and service.process.poll() is None, service.logs()
            with admin.cursor() as cursor:
                cursor.execute(f"ALTER DATABASE {databases.read_name} ALLOW_CONNECTIONS true")
            service.wait_healthy(20)
        finally:
            service.stop()
            admin.close()


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_a_rule_across_variables_is_one_line_naming_both(tmp_path: Path) -> None:
    result = start("btc_price", base_env(RATE_TTL_SECONDS="60", RATE_MAX_AGE_SECONDS="30"), tmp_path)
    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith("configuration error: RATE_TTL_SECONDS (60) must not exceed RATE_MAX_AGE_SECONDS (30)")


def refused_first(url: str) -> str:
    """`url` in libpq's multi-host form, a host that refuses (a closed loopback port) listed first."""
    scheme, _, rest = url.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    separator = "&" if "?" in hosts else "?"
    return (
        f"{scheme}://{credentials}{at}127.0.0.1:1,{hosts}{separator}target_session_attrs=read-write&connect_timeout=2"
    )


@pytest.mark.parametrize(
    "form",
    ["postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "multi-host"],
)
def test_database_urls_as_users_write_them_are_served_by_the_one_driver(tmp_path: Path, form: str) -> None:
    with throwaway_databases() as databases:
        if form == "multi-host":
            url = refused_first(databases.read_url)
        else:
            url = f"{form}://{databases.read_url.partition('://')[2]}"
            assert url.startswith(f"{form}://")
        port = free_port()
        env = base_env(READ_MODEL_DB_URL=url, FETCH_BUY_ORDERS_PORT=str(port))
        service = ServiceProcess("fetch_buy_orders", env, tmp_path / "fetch.log", port).start()
        try:
            assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200
            assert httpx.get(f"{service.url}/buy_orders", timeout=5).json()["buy_orders"] == []
        finally:
            service.stop()


def test_the_migration_takes_a_plain_postgresql_url(tmp_path: Path) -> None:
    with throwaway_databases(migrated=False) as databases:
        assert databases.write_url.startswith("postgresql://")
        postgres_form = databases.read_url.replace("postgresql://", "postgres://", 1)
        result = start(
            "migration", base_env(WRITE_MODEL_DB_URL=databases.write_url, READ_MODEL_DB_URL=postgres_form), tmp_path
        )
    assert result.returncode == 0, result.stderr


def test_the_migration_takes_a_multi_host_url_whose_first_host_refuses(tmp_path: Path) -> None:
    with throwaway_databases(migrated=False) as databases:
        env = base_env(
            WRITE_MODEL_DB_URL=refused_first(databases.write_url), READ_MODEL_DB_URL=refused_first(databases.read_url)
        )
        result = start("migration", env, tmp_path)
        assert result.returncode == 0, result.stderr
        for url in (databases.write_url, databases.read_url):
            with psycopg.connect(url) as connection:
                applied = connection.execute("SELECT count(*) FROM _yoyo_migration").fetchone()
            assert applied is not None and applied[0] > 0


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other process listens on."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize(
    ("service", "variable", "needs"),
    [
        ("btc_price", "BTC_PRICE_PORT", {}),
        ("create_buy_order", "CREATE_BUY_ORDER_PORT", {"BTC_PRICE_URL": "http://127.0.0.1:1"}),
    ],
)
def test_an_http_port_in_use_is_one_line_naming_its_variable(
    tmp_path: Path, held_port: int, service: str, variable: str, needs: dict[str, str]
) -> None:
    with throwaway_databases() as databases:
        env = base_env(WRITE_MODEL_DB_URL=databases.write_url, **needs, **{variable: str(held_port)})
        result = start(service, env, tmp_path)
    assert result.returncode == 3
    assert _one_line(result) == (
        f"refusing to start: {variable}: port {held_port} is already in use; "
        f"stop what holds it or set {variable} to a free port"
    )


@pytest.mark.parametrize(
    ("service", "variable", "database"),
    [
        ("outbox_relay", "OUTBOX_RELAY_METRICS_PORT", "WRITE_MODEL_DB_URL"),
        ("read_model_sync", "READ_MODEL_SYNC_METRICS_PORT", "READ_MODEL_DB_URL"),
    ],
)
def test_a_metrics_port_in_use_is_one_line_naming_its_variable(
    tmp_path: Path, held_port: int, service: str, variable: str, database: str
) -> None:
    with throwaway_databases() as databases:
        url = databases.write_url if database == "WRITE_MODEL_DB_URL" else databases.read_url
        env = base_env(AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2F", **{database: url, variable: str(held_port)})
        result = start(service, env, tmp_path)
    assert result.returncode == 3
    assert _one_line(result) == (
        f"refusing to start: {variable}: port {held_port} is already in use; "
        f"stop what holds it or set {variable} to a free port"
    )


def test_a_database_that_cannot_take_the_start_up_write_is_one_line(tmp_path: Path) -> None:
    # The write model read-only (a standby after a failover): the cap ledger cannot be written.
    with throwaway_databases() as databases:
        admin = admin_connection()
        with admin.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {databases.write_name} SET default_transaction_read_only = on")
        admin.close()
        env = base_env(
            WRITE_MODEL_DB_URL=databases.write_url,
            BTC_PRICE_URL="http://127.0.0.1:1",
            BTC_CAP="50",
            CREATE_BUY_ORDER_PORT=str(free_port()),
        )
        result = start("create_buy_order", env, tmp_path)
    assert result.returncode == 3
    assert (
        _one_line(result)
        == "refusing to start: the write-model database is read-only right now (a failover?); retry shortly"
    )


def _gunicorn(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    assert gunicorn is not None
    return subprocess.run(
        [gunicorn, "--config", str(GUNICORN_CONF)], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_gunicorn_stops_on_a_port_in_use_with_one_line_naming_it(tmp_path: Path, held_port: int) -> None:
    result = _gunicorn(base_env(BTC_ORDERS_SERVICE="btc_price", BTC_PRICE_PORT=str(held_port)), tmp_path)
    assert result.returncode == 3
    assert "Traceback" not in result.stdout + result.stderr
    assert (
        f"refusing to start: BTC_PRICE_PORT: port {held_port} is already in use; "
        "stop what holds it or set BTC_PRICE_PORT to a free port"
    ) in result.stderr.splitlines()


def test_gunicorn_stops_on_a_bad_setting_instead_of_forking_workers_forever(tmp_path: Path) -> None:
    env = base_env(
        BTC_ORDERS_SERVICE="create_buy_order",
        CREATE_BUY_ORDER_PORT=str(free_port()),
        WRITE_MODEL_DB_URL="postgresql://x/y",
        BTC_PRICE_URL="http://127.0.0.1:1",
        BTC_CAP="100000000000",
        WEB_CONCURRENCY="1",
    )
    result = _gunicorn(env, tmp_path)  # times out if gunicorn forks a new failing worker forever
    assert result.returncode == 3, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("configuration error:")]
    assert len(lines) == 1 and lines[0].startswith("configuration error: BTC_CAP: must be at most"), result.stderr
