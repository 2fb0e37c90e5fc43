"""One package per process type; each is started by its own entry point.

HTTP services run as `python -m btc_orders.services.<name>` (uvicorn, one
process) or under gunicorn with uvicorn workers via `btc_orders.asgi`.
"""

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from btc_orders import logs, settings
from btc_orders.adapters import db

SettingsT = TypeVar("SettingsT", bound=settings.BaseServiceSettings)


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
    try:
        db.check_schema(engine, database)
    except db.SchemaNotReady as error:
        refuse_to_start(str(error))
    return engine


def serve(service: str, settings_class: type[SettingsT], create_app: Callable[[SettingsT], FastAPI]) -> None:
    """Run one HTTP service in this process with uvicorn, on the port its settings name."""
    loaded = configured(service, settings_class)
    app = create_app(loaded)
    port: int = getattr(loaded, "port")  # noqa: B009  (every HTTP service's settings have a port)
    uvicorn.run(app, host="0.0.0.0", port=port, log_config=None, access_log=False, timeout_graceful_shutdown=10)
