"""Starting a process: settings, the one-line start-up failure, the schema check, `run_worker()`
(an HTTP service's app and `serve()` build on these: `services/http_service.py`).

Every start-up failure, whatever its cause (a setting, a port in use, a database that is
unreachable, behind or refusing), stops the process with one line naming what to change
and a non-zero exit status, never a traceback: `starting()` is the one place that says so.
"""

import errno
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

from sqlalchemy import Engine

from btc_orders import logs, metrics, settings
from btc_orders.adapters import db
from btc_orders.domain.errors import DomainError
from btc_orders.services.worker import Backoff, StopFlag

SettingsT = TypeVar("SettingsT", bound=settings.BaseServiceSettings)

STARTUP_WAIT_SECONDS = 30
EXIT_REFUSED = 3  # also gunicorn's "worker failed to boot": it stops instead of forking again
log = logging.getLogger(__name__)


class StartupFailure(Exception):
    """A reason not to start, as the one line the operator reads (what to change)."""


def configured(service: str, settings_class: type[SettingsT]) -> SettingsT:
    """Load the settings (or exit with one line naming the bad variable) and set up logging."""
    with starting(service):  # e.g. an unreadable .env: one line too
        loaded = settings.load(settings_class)
        logs.configure(service, loaded.log_level, loaded.fluentd_host, loaded.fluentd_port)
    return loaded


def refuse_to_start(reason: str) -> NoReturn:
    """Stop at start with one clear line (and a non-zero exit status)."""
    print(f"refusing to start: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_REFUSED)


@contextmanager
def starting(service: str) -> Iterator[None]:
    """Wrap everything a process does before it serves: whatever fails there is one line.

    The traceback of an unexpected failure is still logged, at DEBUG (`LOG_LEVEL=DEBUG`).
    """
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as error:
        log.debug("startup_failed", exc_info=error)
        refuse_to_start(startup_reason(service, error))


def startup_reason(service: str, error: Exception) -> str:
    """The one line for a start-up failure: what failed, in the operator's terms."""
    if isinstance(error, StartupFailure):
        return str(error)
    if isinstance(error, DomainError):
        return error.message
    if isinstance(error, db.DATABASE_ERRORS):
        return f"the database refused what {service} does at start: {db.first_line(error)}"
    return f"{service} failed at start: {type(error).__name__}: {db.first_line(error)}"


def bind(port: int, variable: str, host: str = "0.0.0.0") -> socket.socket:
    """A socket bound to `port` (not yet listening), or `StartupFailure` naming `variable`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gunicorn do
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StartupFailure(port_unavailable(variable, port, error)) from None
    return sock


def port_unavailable(variable: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"{variable}: port {port} is already in use; stop what holds it or set {variable} to a free port"
    return f"{variable}: port {port} cannot be bound ({error.strerror or error}); set {variable} to another port"


def serve_metrics(loaded: settings.BaseServiceSettings, field: str = "metrics_port") -> None:
    """Serve a worker's `/metrics` on the port its settings name (0: none), or `StartupFailure`."""
    port: int = getattr(loaded, field)
    variable = type(loaded).model_fields[field].alias or field.upper()
    try:
        metrics.serve(port)
    except OSError as error:
        raise StartupFailure(port_unavailable(variable, port, error)) from None


def engine_at_schema(url: str, pool_size: int, service: str, database: str, autocommit: bool = False) -> Engine:
    """A synchronous process's pooled engine for `database`, once its schema is the one this code needs."""
    wait_for_schema(url, database)
    return db.create_engine(url, pool_size, service, autocommit)


def wait_for_schema(url: str, database: str) -> None:
    """Return once `database` is at the schema this code needs; stop the process (one line) if it
    is behind, or still unreachable after STARTUP_WAIT_SECONDS."""
    deadline = time.monotonic() + STARTUP_WAIT_SECONDS
    backoff = Backoff(first=0.5, ceiling=2.0)  # jittered: replicas started together do not retry in step
    while True:
        try:
            db.check_schema(url, database)
            return
        except db.DatabaseUnreachable as error:
            # It may be starting (compose, a restart): wait a while, then give up loudly.
            if time.monotonic() > deadline:
                refuse_to_start(str(error))
            logs.event(log, "database_not_ready", logging.WARNING, database=database, reason=str(error))
            time.sleep(backoff.delay())
        except db.SchemaNotReady as error:
            refuse_to_start(str(error))


def run_worker(
    service: str,
    settings_class: type[SettingsT],
    start: Callable[[SettingsT], Callable[[StopFlag], None]],
) -> None:
    """Run one worker until SIGTERM or SIGINT: load its settings, `start(settings)` (its
    composition root: the schema check and adapters, under `starting`), serve its `/metrics`,
    then run what `start` returned until the stop flag is set."""
    loaded = configured(service, settings_class)
    with starting(service):
        run = start(loaded)
        stop = StopFlag()
        serve_metrics(loaded)
    run(stop)
