"""Real backing services for tests: throwaway databases, RabbitMQ vhosts, service processes."""

import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from btc_orders.services.migration.__main__ import migrate
from tests.support.processes import Launched, LaunchError, inherited_env, launch

PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RABBITMQCTL = shlex.split(os.environ.get("TEST_RABBITMQCTL", "rabbitmqctl"))


def admin_connection() -> "psycopg2.extensions.connection":
    connection = psycopg2.connect(PG_ADMIN_URL)
    connection.autocommit = True
    return connection


def database_url(name: str) -> str:
    """The plain `postgresql://` URL of the database `name`, as users configure the services."""
    return make_url(PG_ADMIN_URL).set(drivername="postgresql", database=name).render_as_string(hide_password=False)


def dsn(name: str) -> str:
    """A libpq URL (for psycopg2.connect) of the database `name`."""
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@dataclass
class Databases:
    write_name: str
    read_name: str

    @property
    def write_url(self) -> str:
        return database_url(self.write_name)

    @property
    def read_url(self) -> str:
        return database_url(self.read_name)


@contextmanager
def throwaway_databases(migrated: bool = True) -> Iterator[Databases]:
    suffix = uuid.uuid4().hex[:12]
    databases = Databases(f"test_write_{suffix}", f"test_read_{suffix}")
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {databases.write_name}")
        cursor.execute(f"CREATE DATABASE {databases.read_name}")
    connection.close()
    try:
        if migrated:
            migrate("write_model", databases.write_url)
            migrate("read_model", databases.read_url)
        yield databases
    finally:
        connection = admin_connection()
        with connection.cursor() as cursor:
            for name in (databases.write_name, databases.read_name):
                cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


def rabbitmqctl(*args: str) -> str:
    return subprocess.run([*RABBITMQCTL, *args], check=True, capture_output=True, text=True, timeout=60).stdout


@contextmanager
def throwaway_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of its own; yields its AMQP URL."""
    name = f"btc_test_{uuid.uuid4().hex[:12]}"
    url = make_url(AMQP_BASE_URL.replace("amqp://", "postgresql://", 1))
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, url.username or "guest", ".*", ".*", ".*")
    try:
        yield AMQP_BASE_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        rabbitmqctl("delete_vhost", name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    """One process of the suite, started as `python -m btc_orders.services.<name>` by the shared
    launcher (tests/support/processes.py); it can be stopped and started again."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _launched(self) -> Launched | None:
        return Launched(self.name, self.process, self.log_path) if self.process else None

    def start(self, wait: bool = True) -> "ServiceProcess":
        # cwd: the log's folder, no .env there: tests set every variable themselves
        command = [sys.executable, "-m", f"btc_orders.services.{self.name}"]
        self.process = launch(self.name, command, self.env, self.log_path).process
        if wait and self.port is not None:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 20) -> None:
        launched = self._launched()
        assert launched is not None
        try:
            launched.wait_http(f"{self.url}/healthz", timeout)
        except LaunchError as error:
            raise RuntimeError(str(error)) from None

    def kill(self) -> None:
        if launched := self._launched():
            launched.kill()

    def stop(self) -> None:
        if launched := self._launched():
            launched.stop()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def base_env(**overrides: str) -> dict[str, str]:
    return inherited_env(LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", **overrides)


def wait_until(predicate, timeout: float = 20, interval: float = 0.05, message: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
