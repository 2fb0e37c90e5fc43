"""Fixtures for real services: Postgres databases, RabbitMQ vhosts, a loopback Coinbase, processes."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from btc_orders.adapters import db
from tests.support.fake_coinbase import FakeCoinbase
from tests.support.services import Databases, throwaway_databases, throwaway_vhost


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio, the services' event loop."""
    return "asyncio"


@pytest.fixture(scope="session")
def coinbase_server() -> Iterator[FakeCoinbase]:
    server = FakeCoinbase().start()
    yield server
    server.stop()


@pytest.fixture
def coinbase(coinbase_server: FakeCoinbase) -> Iterator[FakeCoinbase]:
    coinbase_server.reset()
    yield coinbase_server
    coinbase_server.reset()


@pytest.fixture
def databases() -> Iterator[Databases]:
    with throwaway_databases() as created:
        yield created


@pytest.fixture
def write_engine(databases: Databases) -> Iterator[Engine]:
    engine = db.create_engine(databases.write_url, pool_size=40)
    yield engine
    engine.dispose()


@pytest.fixture
def read_engine(databases: Databases) -> Iterator[Engine]:
    engine = db.create_engine(databases.read_url, pool_size=10)
    yield engine
    engine.dispose()


@pytest.fixture
def amqp_url() -> Iterator[str]:
    with throwaway_vhost() as url:
        yield url


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    return tmp_path
