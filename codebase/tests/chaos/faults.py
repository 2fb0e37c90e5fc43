"""The faults, each with a way to heal it: processes killed, broker and databases cut off or
read-only, privileges revoked, connections blackholed, Coinbase odd."""

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos import access
from tests.e2e.conftest import Suite
from tests.support.blackhole_proxy import BlackholeProxy
from tests.support.services import ServiceProcess, admin_connection, rabbitmqctl

# A blackhole lasts longer than the other outages: long enough that a silent network failure
# must have been detected (keepalives, heartbeats, server-side timeouts) and worked around
# before the network comes back; the harness checks that it was.
BLACKHOLE_SECONDS = 20.0
BLACKHOLES = ("relay_write_model_blackholed", "sync_broker_blackholed")
RESTART_SECONDS = 60  # for a killed HTTP service to answer /healthz again (2 shared cores can be slow)


@dataclass
class FaultRecord:
    kind: str
    started: float
    healed: float | None = None
    converged_after: float | None = None  # seconds from heal until the read model caught up
    heal_sequence: int | None = None
    start_sequence: int | None = None  # the newest order when the fault began
    unprojected_at_heal: int | None = None  # of the orders stored before it began, not yet projected at heal
    unconverged: int | None = None  # of the orders stored before the heal, how many were last seen missing
    detail: dict[str, Any] = field(default_factory=dict)


Fault = Callable[[FaultRecord], Callable[[], None]]  # apply the fault; returns how to heal it


@dataclass
class Faults:
    suite: Suite
    rng: random.Random
    role: str  # the role every process connects to both databases as (`access.service_role`)
    proxies: dict[str, BlackholeProxy]  # by blackhole fault kind: the proxy that process connects through
    outage_seconds: tuple[float, float] = (1.0, 3.0)
    blackhole_seconds: float = BLACKHOLE_SECONDS
    lock: threading.Lock = field(default_factory=threading.Lock)
    killed: list[ServiceProcess] = field(default_factory=list)  # by the harness; any other that exits died
    left_out: frozenset[str] = frozenset()  # kinds this run does not inject

    def alive(self, name: str) -> list[ServiceProcess]:
        return [p for p in self.suite.processes if p.name == name and p.process and p.process.poll() is None]

    def died(self) -> list[ServiceProcess]:
        """The processes that exited without the harness killing them."""
        return [
            p
            for p in self.suite.processes
            if p.process and p.process.poll() is not None and not any(p is k for k in self.killed)
        ]

    @property
    def vhost(self) -> str:
        return self.suite.amqp_url.rsplit("/", 1)[1]

    def kinds(self) -> dict[str, Fault]:
        write, read = self.suite.databases.write_name, self.suite.databases.read_name
        every: dict[str, Fault] = {
            **{
                f"kill_{name}": lambda record, name=name: self._kill(name, record)
                for name in ("create_buy_order", "btc_price", "fetch_buy_orders", "outbox_relay", "read_model_sync")
            },
            "broker_connections_closed": lambda _: self._close_broker_connections(),
            "broker_unreachable": lambda _: self._broker_unreachable(),
            "broker_restarted_with_unacked": self._broker_restarted_with_unacked,
            "write_model_connections_killed": lambda _: self._terminate(write),
            "write_model_refusing": lambda _: self._refuse(write),
            "write_model_read_only": lambda _: self._read_only(write),
            "write_model_privilege_revoked": lambda _: self._revoke(write),
            "read_model_connections_killed": lambda _: self._terminate(read),
            "read_model_refusing": lambda _: self._refuse(read),
            "read_model_read_only": lambda _: self._read_only(read),
            "read_model_privilege_revoked": lambda _: self._revoke(read),
            **{kind: lambda _, kind=kind: self._blackhole(kind) for kind in BLACKHOLES},
            "coinbase_errors": lambda _: self._coinbase("error500"),
            "coinbase_garbage": lambda _: self._coinbase("html"),
            "coinbase_parser_bomb": lambda _: self._coinbase("parser_bomb"),
            "coinbase_slow": lambda _: self._coinbase_slow(),
        }
        return {kind: fault for kind, fault in every.items() if kind not in self.left_out}

    # processes -------------------------------------------------------------------------------
    def _kill(self, name: str, record: FaultRecord) -> Callable[[], None]:
        candidates = self.alive(name)
        if not candidates:  # they all died by themselves: the harness reports it
            record.detail["skipped"] = f"no {name} left alive to kill"
            return lambda: None
        victim = self.rng.choice(candidates)
        victim.kill()
        self.killed.append(victim)

        def restart() -> None:
            replacement = ServiceProcess(victim.name, victim.env, victim.log_path, victim.port)
            self.suite.processes.append(replacement)
            replacement.start(wait=False)
            if victim.port is not None:
                replacement.wait_healthy(RESTART_SECONDS)

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

    def _broker_restarted_with_unacked(self, record: FaultRecord) -> Callable[[], None]:
        """What a broker restart does to this vhost's clients, with deliveries unacknowledged.

        The shared broker cannot be restarted: instead one worker is frozen (SIGSTOP) until the
        main queue shows deliveries it holds unacknowledged, then the vhost is shut to everyone
        (permissions cleared) and every connection closed by the broker, so the unacked
        deliveries go back to the queue; the worker is thawed into a closed connection, and
        nobody gets back in until healed.
        """
        workers = self.alive("read_model_sync")
        frozen = self.rng.choice(workers).process if workers else None
        if frozen is None:
            record.detail["skipped"] = "no read_model_sync left alive to freeze"
        else:
            frozen.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10
            unacked = self._unacked()
            while unacked == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
                unacked = self._unacked()
            record.detail["unacked_at_close"] = unacked
            rabbitmqctl("clear_permissions", "-p", self.vhost, "guest")
            rabbitmqctl("close_all_connections", "-p", self.vhost, "chaos: broker restarting")
        finally:
            if frozen is not None:
                frozen.send_signal(signal.SIGCONT)
        return lambda: rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*") and None

    def _unacked(self) -> int:
        listing = rabbitmqctl(
            "list_queues", "-p", self.vhost, "--quiet", "--no-table-headers", "messages_unacknowledged"
        )
        return sum(int(line) for line in listing.split() if line.strip().isdigit())

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
        _admin(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        self._terminate(database)
        return lambda: _admin(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")

    def _read_only(self, database: str) -> Callable[[], None]:
        # As after a failover to a replica: every new session is read-only (SQLSTATE 25006 on a write).
        _admin(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
        self._terminate(database)

        def heal() -> None:
            _admin(f"ALTER DATABASE {database} RESET default_transaction_read_only")
            self._terminate(database)  # the sessions opened meanwhile stay read-only until they end

        return heal

    def _revoke(self, database: str) -> Callable[[], None]:
        # The processes' role loses every privilege on the tables (SQLSTATE 42501), sessions kept.
        access.revoke(database, self.role)
        return lambda: access.grant(database, self.role)

    # the network -----------------------------------------------------------------------------
    def _blackhole(self, kind: str) -> Callable[[], None]:
        proxy = self.proxies[kind]
        proxy.blackhole()
        return proxy.restore

    # Coinbase --------------------------------------------------------------------------------
    def _coinbase(self, mode: str) -> Callable[[], None]:
        self.suite.coinbase.set(mode)
        return lambda: self.suite.coinbase.set("healthy")

    def _coinbase_slow(self) -> Callable[[], None]:
        self.suite.coinbase.delay_seconds = 1.5  # beyond COINBASE_TIMEOUT_SECONDS

        def heal() -> None:
            self.suite.coinbase.delay_seconds = 0.0

        return heal

    def schedule(self, duration: float, rounds: int = 1) -> list[str]:
        """Every kind `rounds` times, each round in a seeded order, then seeded picks to fill the time."""
        plan: list[str] = []
        for round_ in range(rounds):
            kinds = list(self.kinds())
            self.rng.shuffle(kinds)
            if round_ == 0:  # the faults whose availability properties need orders flowing come first
                kinds.sort(key=lambda kind: kind not in NEED_ORDERS_FLOWING)
            plan += kinds
        slots = max(len(plan), int(duration / 4))
        return plan + [self.rng.choice(list(self.kinds())) for _ in range(slots - len(plan))]

    def outage(self, kind: str) -> float:
        return self.blackhole_seconds if kind in BLACKHOLES else self.rng.uniform(*self.outage_seconds)


# Orders keep being created during these (the write path does not depend on what they take away);
# the harness checks it, so they come first, before the cap is reached.
NEED_ORDERS_FLOWING = frozenset(
    {
        "broker_unreachable",
        "broker_restarted_with_unacked",
        "read_model_refusing",
        "read_model_read_only",
        "read_model_privilege_revoked",
        *BLACKHOLES,
    }
)


def _admin(statement: str) -> None:
    connection = admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def run_faults(
    faults: Faults,
    plan: list[str],
    must: int,
    duration: float,
    stop: threading.Event,
    on_heal: Callable[[FaultRecord], None],
    on_start: Callable[[FaultRecord], None] = lambda _: None,
    before_heal: Callable[[FaultRecord], None] = lambda _: None,
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
        on_start(record)
        heal = faults.kinds()[kind](record)
        stop.wait(faults.outage(kind))
        before_heal(record)
        try:
            heal()
        except Exception as error:  # reported as a problem of the run, and the run goes on
            record.detail["heal_failed"] = (str(error).strip().splitlines() or [type(error).__name__])[0]
        record.healed = time.monotonic()
        records.append(record)
        on_heal(record)
        stop.wait(gap / 2)
    return records
