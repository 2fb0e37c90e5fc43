"""Starting an HTTP service: its app (the lifespan that awaits its bootstrap, the database-error
handler) and `serve()`, uvicorn on the port its settings name. The workers start without any of
this (`startup.run_worker`): they carry no web framework.
"""

import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Protocol, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from btc_orders import openapi, settings, web
from btc_orders.adapters import db, order_rows
from btc_orders.domain.errors import ServiceUnavailable
from btc_orders.services.startup import EXIT_REFUSED, bind, configured, starting

SettingsT = TypeVar("SettingsT", bound=settings.BaseServiceSettings)
log = logging.getLogger(__name__)


class Adapters(Protocol):
    """What an HTTP service's bootstrap builds (its composition root): the adapters its routes
    depend on, started, probed by `/readyz` and closed by the app's lifespan."""

    async def start(self) -> None: ...

    async def readiness(self) -> dict[str, bool]: ...

    async def close(self) -> None: ...


async def _database_error_handler(request: Request, error: Exception) -> Response:
    """A database error that no adapter turned into a domain error: a 503 if it is an outage
    (`db.is_outage`, by its SQLSTATE) or an order's value the write model's schema does not accept
    yet (`order_rows.schema_gap`: a deployment gap), else a bug (500)."""
    if db.is_outage(error):
        return await web.domain_error_handler(request, ServiceUnavailable(db.outage_message("service's", error)))
    gap = order_rows.schema_gap(error)
    if gap is not None:
        return await web.domain_error_handler(request, gap)
    return await web.unexpected_error_handler(request, error)


def http_app(
    service: str,
    description: str,
    loaded: SettingsT,
    bootstrap: Callable[[SettingsT], Awaitable[Adapters]],
) -> FastAPI:
    """An HTTP service's app, built without I/O: `await bootstrap(loaded)` builds the adapters when
    the app starts (its lifespan), and the routes reach them through `app.state` (each service's
    `deps`). Tests pass a bootstrap of fakes, or set `app.state.adapters`."""
    app: FastAPI

    async def readiness() -> dict[str, bool]:
        adapters: Adapters = app.state.adapters
        return await adapters.readiness()

    app = web.create_app(
        service,
        description,
        readiness,
        _lifespan(service, lambda: bootstrap(loaded)),
        exception_handlers=dict.fromkeys(db.DATABASE_ERRORS, _database_error_handler),
    )
    app.state.settings = loaded
    openapi.install(app)
    return app


def _lifespan(
    service: str, bootstrap: Callable[[], Awaitable[Adapters]]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with starting(service), _stopped_at_once_by_sigterm():  # a failure: one line, exit 3
            adapters = await bootstrap()
            await adapters.start()
        app.state.adapters = adapters
        try:
            yield
        finally:
            await adapters.close()

    return lifespan


@contextmanager
def _stopped_at_once_by_sigterm() -> Iterator[None]:
    """While the adapters are built (a database that is starting may be waited for), SIGTERM stops
    the process at once, as it did before the server took the signals over."""
    if threading.current_thread() is not threading.main_thread():
        yield  # e.g. a TestClient's lifespan: signals are the main thread's
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(service: str, settings_class: type[SettingsT], create_app: Callable[[SettingsT], FastAPI]) -> None:
    """Run one HTTP service in this process with uvicorn, on the port its settings name.

    The port is bound first, so a port in use stops the process before it touches a database;
    the app's lifespan then builds its adapters (a failure there is one line too, and exit 3).
    """
    loaded = configured(service, settings_class)
    port: int = getattr(loaded, "port")  # noqa: B009  (every HTTP service's settings have a port)
    variable = settings_class.model_fields["port"].alias or "PORT"
    with starting(service):
        sock = bind(port, variable)
        app = create_app(loaded)
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(EXIT_REFUSED)  # the lifespan refused to start, and said why in one line
