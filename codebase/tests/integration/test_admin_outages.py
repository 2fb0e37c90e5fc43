"""`admin status` during an outage: exit 3 with one line (the runbooks run it exactly then)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import Databases, admin_connection, base_env


def with_password(url: str) -> str:
    return url.replace("postgres@", "postgres:secret@", 1)  # the test Postgres trusts loopback: any password does


def admin_status(databases: Databases, amqp_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = base_env(
        WRITE_MODEL_DB_URL=with_password(databases.write_url),
        READ_MODEL_DB_URL=with_password(databases.read_url),
        AMQP_URL=amqp_url,
    )
    return subprocess.run(
        [sys.executable, "-m", "btc_orders.admin", "status"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("model", ["write", "read"])
def test_status_with_a_database_refusing_connections_exits_3_with_one_line(
    model: str, databases: Databases, amqp_url: str, tmp_path: Path
) -> None:
    name = databases.write_name if model == "write" else databases.read_name
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        result = admin_status(databases, amqp_url, tmp_path)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        connection.close()
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("a backing service is unreachable:"), result.stderr
    assert "not currently accepting connections" in lines[0]
    masked = (with_password(databases.write_url), with_password(databases.read_url))
    assert (
        "WRITE_MODEL_DB_URL={}, READ_MODEL_DB_URL={}".format(*(url.replace("secret", "***") for url in masked))
        in lines[0]
    )
    assert "secret" not in result.stderr
