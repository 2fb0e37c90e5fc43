"""Real backing services for tests: throwaway databases, RabbitMQ vhosts, service processes."""

import atexit
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pika
import psycopg
import psycopg_pool

from btc_orders.adapters import db
from btc_orders.services.migration.__main__ import migrate
from tests.support.processes import Launched, LaunchError, inherited_env, launch

PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RABBITMQCTL = shlex.split(os.environ.get("TEST_RABBITMQCTL", "rabbitmqctl"))

T = TypeVar("T")


def admin_connection() -> "psycopg.Connection[Any]":
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


def database_url(name: str) -> str:
    """The plain `postgresql://` URL of the database `name`, as users configure the services."""
    return urllib.parse.urlsplit(PG_ADMIN_URL)._replace(scheme="postgresql", path=f"/{name}").geturl()


def dsn(name: str) -> str:
    """A libpq URL (for psycopg.connect) of the database `name`."""
    return database_url(name)


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


class _Background:
    """rabbitmqctl work that need not hold a test up, done in one thread of the process's own
    (every rabbitmqctl boots an Erlang VM: about a second). Python finishes the queued work
    before it exits; what failed is reported then."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-services")
        self._futures: list[Future[Any]] = []
        atexit.register(self._report)  # runs after the executor has drained its queue

    def submit(self, work: Callable[..., T], *args: str) -> "Future[T]":
        future = self._executor.submit(work, *args)
        self._futures.append(future)
        return future

    def _report(self) -> None:
        for future in self._futures:
            if future.done() and future.exception() is not None:
                print(f"tests.support.services: cleanup failed: {future.exception()!r}", file=sys.stderr)


_background = _Background()
_templates: dict[str, str] = {}
_templates_lock = threading.Lock()


def _migrated_template(model: str) -> str:
    """A database of this process migrated once to `model` ("write_model" or "read_model"), from
    which every migrated throwaway database is cloned (`CREATE DATABASE ... TEMPLATE`): the same
    tables as running the migrations, in a fraction of the time. Nobody may connect to it, so a
    clone never fails on a session left open in it; dropped when the process exits."""
    with _templates_lock:
        if model not in _templates:
            name = f"test_template_{model}_{uuid.uuid4().hex[:12]}"
            sql("postgres", f"CREATE DATABASE {name}")
            atexit.register(_drop, name)
            migrate(model, database_url(name))
            sql("postgres", f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            _templates[model] = name
        return _templates[model]


def sql(database: str, *statements: str) -> None:
    """Run statements as the superuser in `database` ("postgres": the server's own)."""
    with psycopg.connect(PG_ADMIN_URL if database == "postgres" else dsn(database), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def _drop(*names: str) -> None:
    # A test may have closed a database to connections (an outage): FORCE ends the sessions left.
    sql("postgres", *(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in names))


@contextmanager
def throwaway_databases(migrated: bool = True) -> Iterator[Databases]:
    """A write model and a read model of the caller's own, migrated (cloned from the migrated
    templates) or empty; dropped on exit (before, say, a role granted on them is dropped)."""
    suffix = uuid.uuid4().hex[:12]
    databases = Databases(f"test_write_{suffix}", f"test_read_{suffix}")
    write_template = _migrated_template("write_model") if migrated else "template1"
    read_template = _migrated_template("read_model") if migrated else "template1"
    sql(
        "postgres",
        f"CREATE DATABASE {databases.write_name} TEMPLATE {write_template}",
        f"CREATE DATABASE {databases.read_name} TEMPLATE {read_template}",
    )
    try:
        yield databases
    finally:
        _drop(databases.write_name, databases.read_name)


def rabbitmqctl(*args: str) -> str:
    return subprocess.run([*RABBITMQCTL, *args], check=True, capture_output=True, text=True, timeout=60).stdout


def _add_vhost() -> str:
    name = f"btc_test_{uuid.uuid4().hex[:12]}"
    user = urllib.parse.urlsplit(AMQP_BASE_URL).username or "guest"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    return name


def _delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


class _SpareVhost:
    """The next throwaway vhost, made in the background while the test that took the last one
    runs: unused until taken, it is the same as one made on demand. Deleted at exit if left."""

    def __init__(self) -> None:
        self._spare: Future[str] | None = None
        self._lock = threading.Lock()
        atexit.register(self._delete_left)

    def take(self) -> str:
        with self._lock:
            taken = self._spare or _background.submit(_add_vhost)
            self._spare = _background.submit(_add_vhost)
        return taken.result()

    def _delete_left(self) -> None:
        if self._spare is not None and self._spare.exception() is None:
            _delete_vhost(self._spare.result())


_vhosts = _SpareVhost()


@contextmanager
def throwaway_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of its own; yields its AMQP URL. Deleted on exit, before the next test
    (deleting one stops its quorum queues: never while the next test's queues run)."""
    name = _vhosts.take()
    try:
        yield AMQP_BASE_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _delete_vhost(name)


def publish_confirmed(amqp_url: str, exchange: str, routing_key: str, bodies: list[bytes]) -> None:
    """Publish each body with a publisher confirm and `mandatory`, as the relay does: once this
    returns, every one is in a queue. A plain publish followed by closing the connection may lose
    a message the broker had not taken yet (AMQP promises nothing without confirms)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(exchange, routing_key, body, mandatory=True)  # raises if nacked or unroutable
    finally:
        connection.close()


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


@asynccontextmanager
async def opened_pool(
    url: str, size: int, application_name: str = "btc_orders_test"
) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    """A pool as a service opens it (`db.async_pool`), closed after."""
    pool = db.async_pool(url, size, application_name)
    await pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()
