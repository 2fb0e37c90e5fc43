"""The suite as real processes: each test gets its own databases, vhost and ports."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.fake_coinbase import FakeCoinbase
from tests.support.services import (
    Databases,
    ServiceProcess,
    base_env,
    free_port,
    throwaway_databases,
    throwaway_vhost,
)

HTTP_SERVICES = {
    "btc_price": "BTC_PRICE_PORT",
    "create_buy_order": "CREATE_BUY_ORDER_PORT",
    "fetch_buy_orders": "FETCH_BUY_ORDERS_PORT",
}


AMQP_SERVICES = {"outbox_relay", "read_model_sync"}


@dataclass
class Suite:
    databases: Databases
    coinbase: FakeCoinbase
    directory: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[ServiceProcess] = field(default_factory=list)
    _vhost: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _amqp_url: str | None = None

    @property
    def amqp_url(self) -> str:
        """A RabbitMQ vhost of the suite's own, made on first use (rabbitmqctl is slow)."""
        if self._amqp_url is None:
            self._amqp_url = self._vhost.enter_context(throwaway_vhost())
            self.env["AMQP_URL"] = self._amqp_url
        return self._amqp_url

    def __post_init__(self) -> None:
        self.env = base_env(
            WRITE_MODEL_DB_URL=self.databases.write_url,
            READ_MODEL_DB_URL=self.databases.read_url,
            COINBASE_API_URL=self.coinbase.url,
            RATE_TTL_SECONDS="2",
            RATE_MAX_AGE_SECONDS="30",
            COINBASE_TIMEOUT_SECONDS="1",
            OUTBOX_POLL_INTERVAL_SECONDS="0.02",
            OUTBOX_RELAY_METRICS_PORT="0",  # several relays and workers run side by side
            READ_MODEL_SYNC_METRICS_PORT="0",
        )

    def start(self, name: str, wait: bool = True, **overrides: str) -> ServiceProcess:
        if name in AMQP_SERVICES:
            _ = self.amqp_url
        env = {**self.env, **overrides}
        port = None
        if name in HTTP_SERVICES:
            port = int(env.get(HTTP_SERVICES[name]) or free_port())
            env[HTTP_SERVICES[name]] = str(port)
        if name == "create_buy_order" and "BTC_PRICE_URL" not in env:
            env["BTC_PRICE_URL"] = self.service("btc_price").url
        index = sum(1 for p in self.processes if p.name == name)
        process = ServiceProcess(name, env, self.directory / f"{name}-{index}.log", port)
        self.processes.append(process)
        return process.start(wait=wait)

    def service(self, name: str) -> ServiceProcess:
        return next(p for p in self.processes if p.name == name and p.process and p.process.poll() is None)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self._vhost.close()


@pytest.fixture
def suite(databases: Databases, coinbase: FakeCoinbase, tmp_path: Path) -> Iterator[Suite]:
    running = Suite(databases, coinbase, tmp_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shared_suite(coinbase_server: FakeCoinbase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """One suite for a whole module, for tests that tell their orders apart by key."""
    with throwaway_databases() as databases:
        coinbase_server.reset()
        running = Suite(databases, coinbase_server, tmp_path_factory.mktemp("suite"))
        yield running
        running.stop()
