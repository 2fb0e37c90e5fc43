"""One package per process type; each is started by its own entry point.

HTTP services run as `python -m btc_orders.services.<name>` (uvicorn, one
process) or under gunicorn with uvicorn workers via `btc_orders.asgi`.
"""

import logging
import sys
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from btc_orders import logs, settings
from btc_orders.adapters import db
from btc_orders.services.worker import Backoff

SettingsT = TypeVar("SettingsT", bound=settings.BaseServiceSettings)

STARTUP_WAIT_SECONDS = 30
log = logging.getLogger(__name__)


def configured(service: str, settings_class: type[SettingsT]) -> SettingsT:
    """Load the settings (or exit with one line naming the bad variable) and set up logging."""
    loaded = settings.load(settings_class)
    logs.configure(service, loaded.log_level, loaded.fluentd_host, loaded.fluentd_port)
    return loaded


def refuse_to_start(reason: str) -> NoReturn:
    """Stop at start with one clear line (and a non-zero exit status)."""
    print(f"refusing to start: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(3)


def engine_at_schema(url: str, pool_size: int, service: str, database: str, autocommit: bool = False) -> Engine:
    """A pooled engine for `database`, or stop at start if its schema is not the one this code needs."""
    engine = db.create_engine(url, pool_size, service, autocommit)
    deadline = time.monotonic() + STARTUP_WAIT_SECONDS
    backoff = Backoff(first=0.5, ceiling=2.0)  # jittered: replicas started together do not retry in step
    while True:
        try:
            db.check_schema(engine, database)
            return engine
        except db.DatabaseUnreachable as error:
            # It may be starting (compose, a restart): wait a while, then give up loudly.
            if time.monotonic() > deadline:
                refuse_to_start(str(error))
            logs.event(log, "database_not_ready", logging.WARNING, database=database, reason=str(error))
            time.sleep(backoff.delay())
        except db.SchemaNotReady as error:
            refuse_to_start(str(error))


def serve(service: str, settings_class: type[SettingsT], create_app: Callable[[SettingsT], FastAPI]) -> None:
    """Run one HTTP service in this process with uvicorn, on the port its settings name."""
    loaded = configured(service, settings_class)
    app = create_app(loaded)
    port: int = getattr(loaded, "port")  # noqa: B009  (every HTTP service's settings have a port)
    uvicorn.run(app, host="0.0.0.0", port=port, log_config=None, access_log=False, timeout_graceful_shutdown=10)
