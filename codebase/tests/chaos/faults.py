"""The faults, each with a way to heal it: processes killed, broker and databases cut off, Coinbase odd."""

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.e2e.conftest import Suite
from tests.support.services import ServiceProcess, admin_connection, rabbitmqctl


@dataclass
class FaultRecord:
    kind: str
    started: float
    healed: float | None = None
    converged_after: float | None = None  # seconds from heal until the read model caught up
    heal_sequence: int | None = None


Fault = Callable[[], Callable[[], None]]  # apply the fault; returns how to heal it


@dataclass
class Faults:
    suite: Suite
    rng: random.Random
    outage_seconds: tuple[float, float] = (1.0, 3.0)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def vhost(self) -> str:
        return self.suite.amqp_url.rsplit("/", 1)[1]

    def kinds(self) -> dict[str, Fault]:
        return {
            "kill_create_buy_order": lambda: self._kill("create_buy_order"),
            "kill_btc_price": lambda: self._kill("btc_price"),
            "kill_fetch_buy_orders": lambda: self._kill("fetch_buy_orders"),
            "kill_outbox_relay": lambda: self._kill("outbox_relay"),
            "kill_read_model_sync": lambda: self._kill("read_model_sync"),
            "broker_connections_closed": self._close_broker_connections,
            "broker_unreachable": self._broker_unreachable,
            "write_model_connections_killed": lambda: self._terminate(self.suite.databases.write_name),
            "write_model_refusing": lambda: self._refuse(self.suite.databases.write_name),
            "read_model_connections_killed": lambda: self._terminate(self.suite.databases.read_name),
            "read_model_refusing": lambda: self._refuse(self.suite.databases.read_name),
            "coinbase_errors": lambda: self._coinbase("error500"),
            "coinbase_garbage": lambda: self._coinbase("html"),
            "coinbase_slow": self._coinbase_slow,
        }

    # processes -------------------------------------------------------------------------------
    def _kill(self, name: str) -> Callable[[], None]:
        candidates = [p for p in self.suite.processes if p.name == name and p.process and p.process.poll() is None]
        victim = self.rng.choice(candidates)
        victim.kill()

        def restart() -> None:
            replacement = ServiceProcess(victim.name, victim.env, victim.log_path, victim.port)
            self.suite.processes.append(replacement)
            replacement.start(wait=victim.port is not None)

        return restart

    # the broker ------------------------------------------------------------------------------
    def _close_broker_connections(self) -> Callable[[], None]:
        rabbitmqctl("close_all_connections", "-p", self.vhost, "chaos: connections closed")
        return lambda: None

    def _broker_unreachable(self) -> Callable[[], None]:
        # No permissions on the vhost and every connection closed: nobody gets back in until healed.
        rabbitmqctl("clear_permissions", "-p", self.vhost, "guest")
        rabbitmqctl("close_all_connections", "-p", self.vhost, "chaos: broker unreachable")
        return lambda: rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*") and None

    # the databases ---------------------------------------------------------------------------
    def _terminate(self, database: str) -> Callable[[], None]:
        connection = admin_connection()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        connection.close()
        return lambda: None

    def _refuse(self, database: str) -> Callable[[], None]:
        connection = admin_connection()
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        connection.close()
        self._terminate(database)

        def heal() -> None:
            again = admin_connection()
            with again.cursor() as cursor:
                cursor.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
            again.close()

        return heal

    # Coinbase --------------------------------------------------------------------------------
    def _coinbase(self, mode: str) -> Callable[[], None]:
        self.suite.coinbase.set(mode)
        return lambda: self.suite.coinbase.set("healthy")

    def _coinbase_slow(self) -> Callable[[], None]:
        self.suite.coinbase.delay_seconds = 1.5  # beyond COINBASE_TIMEOUT_SECONDS

        def heal() -> None:
            self.suite.coinbase.delay_seconds = 0.0

        return heal

    def schedule(self, duration: float) -> list[str]:
        """Every kind at least once, in a seeded order, then seeded picks to fill the time."""
        kinds = list(self.kinds())
        self.rng.shuffle(kinds)
        # the faults whose availability properties need orders flowing come first
        kinds.sort(key=lambda kind: kind not in ("broker_unreachable", "read_model_refusing"))
        slots = max(len(kinds), int(duration / 4))
        return kinds + [self.rng.choice(kinds) for _ in range(slots - len(kinds))]

    def outage(self) -> float:
        return self.rng.uniform(*self.outage_seconds)


def run_faults(
    faults: Faults,
    plan: list[str],
    must: int,
    duration: float,
    stop: threading.Event,
    on_heal: Callable[[FaultRecord], None],
) -> list[FaultRecord]:
    """Inject the plan: its first `must` faults whatever the time, the rest while time remains."""
    records: list[FaultRecord] = []
    gap = duration / (len(plan) + 1)
    deadline = time.monotonic() + duration
    for index, kind in enumerate(plan):
        if stop.is_set() or (index >= must and time.monotonic() > deadline):
            break
        stop.wait(gap / 2)
        record = FaultRecord(kind, time.monotonic())
        heal = faults.kinds()[kind]()
        stop.wait(faults.outage())
        heal()
        record.healed = time.monotonic()
        records.append(record)
        on_heal(record)
        stop.wait(gap / 2)
    return records
