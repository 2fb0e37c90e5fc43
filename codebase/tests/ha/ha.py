"""What the HA fault tests share: the nodes (Patroni's Postgres, RabbitMQ), SQL on a node, a paced
burst that keeps every answer with its timing, the progress of the projection, and the report.

Black-box as tests/cluster is: the gateway's published ports and the engine's CLI (`docker exec`
into the nodes, `docker kill`, `docker start`), nothing else. Every wait is bounded.
"""

import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.cluster import Api, Container, Deadline, containers, of_service, run, wait_for
from tests.cluster.session import Cluster

PG_NODES = ("pg1", "pg2", "pg3")
RABBIT_NODES = ("rabbit1", "rabbit2", "rabbit3")
QUEUE = "read_model_sync"
DEAD_LETTER_QUEUE = "read_model_sync.dead"
# The longest a PUT may take while a node dies: a request caught on a connection to the killed
# primary waits for TCP_USER_TIMEOUT (15 s, adapters/db.py) to fail it, then is answered 503.
REQUEST_BOUND_SECONDS = 20.0
# `Prefer: wait=N` answers within N s plus this much.
WAIT_SLACK_SECONDS = 2.0
REPORT = Path(os.environ.get("HA_REPORT", "/tmp/btc-orders-ha-report.json"))


def node(cluster: Cluster, service: str) -> Container:
    found = of_service(containers(cluster.env), service)
    assert len(found) == 1, f"expected one {service} container, found {[c.name for c in found]}"
    return found[0]


def sql(container: Container, database: str, query: str, timeout: float = 30) -> list[str]:
    """The rows of `query` run by psql inside a Postgres container (one `|`-separated line each)."""
    done = run(
        [
            "docker",
            "exec",
            container.id,
            "psql",
            "-U",
            "btc",
            "-d",
            database,
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            query,
        ],
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"psql on {container.name}: {done.stderr.strip()[:500]}"
    return [line for line in done.stdout.splitlines() if line]


def patroni_members(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Patroni's view of the write model's nodes (name -> role, state, timeline), asked of any
    running node's REST API (GET /cluster)."""
    for service in PG_NODES:
        container = node(cluster, service)
        if not container.running:
            continue
        done = run(
            [
                "docker",
                "exec",
                container.id,
                "python3",
                "-c",
                "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8008/cluster',timeout=4).read().decode())",
            ],
            timeout=30,
            check=False,
        )
        if done.returncode == 0:
            members = json.loads(done.stdout)["members"]
            return {member["name"]: member for member in members}
    raise AssertionError("no write-model node's Patroni answered GET /cluster")


def leader(cluster: Cluster) -> str:
    """The write model's primary, by Patroni (a leader that is running)."""

    def probe() -> str | None:
        for name, member in patroni_members(cluster).items():
            if member["role"] == "leader" and member["state"] == "running":
                return name
        return None

    found: str = wait_for("the write model to have a running leader", probe, 120)
    return found


def primaries(cluster: Cluster) -> list[str]:
    """The running nodes that take writes (not in recovery): exactly one, or a split write model."""
    found = []
    for service in PG_NODES:
        container = node(cluster, service)
        if container.running and sql(container, "write_model", "SELECT pg_is_in_recovery()") == ["f"]:
            found.append(service)
    return found


def rabbitmqctl(container: Container, *args: str, timeout: float = 60) -> str:
    done = run(["docker", "exec", container.id, "rabbitmqctl", "-q", *args], timeout=timeout, check=False)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)} on {container.name}: {done.stderr.strip()[:500]}"
    return done.stdout


def queues(cluster: Cluster, asked_of: str) -> dict[str, dict[str, Any]]:
    """The queues (name -> messages, leader, members), as the node `asked_of` sees them."""
    text = rabbitmqctl(
        node(cluster, asked_of), "list_queues", "name", "messages", "leader", "members", "--formatter", "json"
    )
    return {queue["name"]: queue for queue in json.loads(text)}


def read_model_count(cluster: Cluster) -> int:
    return int(sql(node(cluster, "read_model"), "read_model", "SELECT count(*) FROM buy_order_view")[0])


@dataclass
class Answer:
    key: str
    sent: float  # time.monotonic() when sent
    seconds: float
    status: int  # 0: no HTTP answer (the client's error)
    retry_after: str | None
    body: dict[str, Any] | None


@dataclass
class PacedBurst:
    """`count` orders sent by `threads` clients, each with its own key, every answer kept with its
    timing. A client answered 503 waits as `Retry-After` says (at most 1 s) before its next
    order, as a client should: the burst then spans an outage instead of ending in it."""

    api: Api
    count: int
    threads: int = 16
    amount: str = "10.00"
    answers: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _issued: int = 0
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> "PacedBurst":
        for _ in range(self.threads):
            worker = threading.Thread(target=self._client, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _client(self) -> None:
        while True:
            with self._lock:
                if self._issued >= self.count:
                    return
                self._issued += 1
            answer = send(self.api, str(uuid.uuid4()), self.amount)
            with self._lock:
                self.answers.append(answer)
            if answer.status == 503:
                time.sleep(min(1.0, float(answer.retry_after or 1)))

    @property
    def answered(self) -> int:
        with self._lock:
            return len(self.answers)

    def join(self, seconds: float) -> None:
        deadline = Deadline(seconds)
        for worker in self._workers:
            worker.join(max(0.0, deadline.seconds))
        if any(worker.is_alive() for worker in self._workers):
            pytest.fail(f"the burst did not finish within {seconds:.0f} s", pytrace=False)

    def statuses(self) -> Counter[int]:
        return Counter(answer.status for answer in self.answers)

    def created(self) -> dict[str, dict[str, Any]]:
        return {a.body["id"]: a.body for a in self.answers if a.status == 201 and a.body}


def send(api: Api, key: str, amount: str = "10.00") -> Answer:
    sent = time.monotonic()
    try:
        response = api.put_order("USD", amount, key=key)
    except httpx.HTTPError as error:
        return Answer(key, sent, time.monotonic() - sent, 0, None, {"error": f"{type(error).__name__}: {error}"})
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text[:200]}
    return Answer(key, sent, time.monotonic() - sent, response.status_code, response.headers.get("Retry-After"), body)


@dataclass
class Progress:
    """The read model's order count sampled every `interval` s (a thread), to measure the longest
    time the projection made no progress while orders were waiting for it."""

    cluster: Cluster
    interval: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Progress":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        read_model = node(self.cluster, "read_model")
        while not self._stop.is_set():
            with contextlib.suppress(AssertionError, subprocess.SubprocessError, pytest.fail.Exception):
                count = sql(read_model, "read_model", "SELECT count(*) FROM buy_order_view")[0]
                self.samples.append((time.monotonic(), int(count)))
            self._stop.wait(self.interval)

    def next_growth_after(self, moment: float) -> float | None:
        """Seconds from `moment` until the count grew past what it was then (None: it never did)."""
        before = [count for at, count in self.samples if at <= moment]
        if not before:
            return None
        grown = [at for at, count in self.samples if at > moment and count > before[-1]]
        return grown[0] - moment if grown else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)

    def longest_stall(self, created_at: list[float], baseline: int) -> float:
        """The longest stretch in which the count did not grow while fewer orders were projected
        than had been answered 201 (`created_at`: when each 201 came; `baseline`: the count
        before the burst)."""
        longest, since = 0.0, None
        previous = None
        for moment, count in self.samples:
            waiting = sum(1 for t in created_at if t <= moment) > count - baseline
            if previous is not None and count == previous and waiting:
                since = since if since is not None else moment - self.interval
                longest = max(longest, moment - since)
            else:
                since = None
            previous = count
        return longest


def prefer_wait_within_bound(cluster: Cluster, wait_seconds: int = 3) -> float:
    """A new order read back with `Prefer: wait=N`: 200 within N s plus slack; the seconds taken.
    Then an id that does not exist: the 404 comes after N s, not before, and within the bound."""
    api = cluster.api
    response = api.put_order("USD", "10.00")
    assert response.status_code == 201, f"PUT: {response.status_code} {response.text}"
    order_id = response.json()["id"]
    started = time.monotonic()
    got = api.request("GET", f"{api.fetch_url}/buy_orders/{order_id}", headers={"Prefer": f"wait={wait_seconds}"})
    took = time.monotonic() - started
    assert got.status_code == 200, f"GET with Prefer: wait={wait_seconds}: {got.status_code} {got.text}"
    assert took <= wait_seconds + WAIT_SLACK_SECONDS, f"Prefer: wait={wait_seconds} answered in {took:.1f} s"
    started = time.monotonic()
    missing = api.request(
        "GET", f"{api.fetch_url}/buy_orders/{uuid.uuid4()}", headers={"Prefer": f"wait={wait_seconds}"}
    )
    waited = time.monotonic() - started
    assert missing.status_code == 404, f"an unknown id with Prefer: wait: {missing.status_code} {missing.text}"
    # Preference-Applied: the wait was offered, so the process listens for arrivals (a 404 at once
    # without it would mean its LISTEN connection is gone).
    assert missing.headers.get("Preference-Applied") == f"wait={wait_seconds}", dict(missing.headers)
    assert wait_seconds - 0.5 <= waited <= wait_seconds + WAIT_SLACK_SECONDS, (
        f"an unknown id with Prefer: wait={wait_seconds} answered after {waited:.1f} s"
    )
    return took


def report(section: str, figures: dict[str, Any]) -> None:
    """Print the figures and keep them in HA_REPORT (a JSON file the stage prints at the end)."""
    print(f"\nHA {section}: {json.dumps(figures, sort_keys=True)}")
    existing: dict[str, Any] = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    existing[section] = figures
    REPORT.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


def histogram(answers: list[Answer]) -> dict[str, int]:
    return {str(status): count for status, count in sorted(Counter(a.status for a in answers).items())}


def kill(container: Container) -> float:
    """SIGKILL the whole container (no goodbye); Docker restarts no container killed by hand.
    Returns time.monotonic() once `docker kill` has returned: the node is dead from then on (a
    request sent before that may still have been served by it)."""
    run(["docker", "kill", "--signal", "KILL", container.id], timeout=60)
    return time.monotonic()


def start(container: Container) -> None:
    run(["docker", "start", container.id], timeout=120)


def first(predicate: Callable[[Answer], bool], answers: list[Answer]) -> Answer | None:
    matching = [a for a in answers if predicate(a)]
    return min(matching, key=lambda a: a.sent + a.seconds) if matching else None
