"""What every HTTP service shares: the app factory, errors, request ids, health probes.

Domain errors map to an HTTP status and the one error shape
`{"detail": {"code": ..., "message": ...}}` here and nowhere else.
"""

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from http import HTTPStatus
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from btc_orders import logs, metrics
from btc_orders.domain import errors, money

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
_TOO_LARGE_MESSAGE = f"request bodies are limited to {MAX_BODY_BYTES} bytes"
REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID_LENGTH = 128

# status and Retry-After seconds (or None) for each domain error
_STATUS: dict[type[errors.DomainError], tuple[int, int | None]] = {
    errors.IdempotenceKeyConflict: (400, None),
    errors.UnknownReference: (404, None),
    errors.OrderNotFound: (404, None),
    errors.BtcCapExceeded: (409, None),
    errors.OrderInFlight: (409, 1),
    errors.IdempotenceKeyReused: (422, None),
    errors.RateUnavailable: (503, 1),
    errors.ServiceUnavailable: (503, 1),
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The error shape of every non-422 error of every service."""

    detail: ErrorDetail


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, headers=headers, media_type="application/json")


def error_response(
    status_code: int, code: str, message: str, retry_after: float | None = None, **extra: Any
) -> Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
    return json_response({"detail": {"code": code, "message": message, **extra}}, status_code, headers)


async def domain_error_handler(_request: Request, error: Exception) -> Response:
    assert isinstance(error, errors.DomainError)
    status_code, default_retry_after = _STATUS.get(type(error), (400, None))
    retry_after = error.retry_after or default_retry_after
    extra: dict[str, Any] = {}
    if isinstance(error, errors.BtcCapExceeded):
        extra = {
            "requested_btc": money.format_btc(error.requested),
            "available_btc": money.format_btc(error.available),
        }
    if status_code >= 500:
        logs.event(log, "request_failed", logging.WARNING, code=error.code, reason=error.message)
    return error_response(status_code, error.code, error.message, retry_after, **extra)


async def _http_error_handler(request: Request, error: Exception) -> Response:
    """Starlette's own errors (unknown path 404, 405, the streamed 413) in the one error shape."""
    assert isinstance(error, HTTPException)
    if isinstance(error, _BodyTooLarge):
        return error_response(413, "payload_too_large", _TOO_LARGE_MESSAGE)
    try:
        code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        code = "http_error"
    response = error_response(error.status_code, code, str(error.detail))
    response.headers.update(error.headers or {})
    return response


async def unexpected_error_handler(_request: Request, error: Exception) -> Response:
    log.error("unhandled_error", exc_info=error)
    return error_response(500, "internal_error", "an unexpected error happened; it has been logged")


# Probes and scrapes answered well are logged at DEBUG: at INFO they would be most of the lines
# (a probe every few seconds per container, idle or not) and say nothing; a failed one is at INFO.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestContextMiddleware:
    """Request id in and out, one access-log event per request (probes: `QUIET_ROUTES`), and a
    body size limit.

    Plain ASGI (not BaseHTTPMiddleware) so that it costs next to nothing.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, _quiet_startup_failure(send) if scope["type"] == "lifespan" else send)
            return
        headers = dict(scope["headers"])
        request_id = _valid_request_id(headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1"))
        token = logs.request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
                response = error_response(413, "payload_too_large", _TOO_LARGE_MESSAGE)
                response.headers[REQUEST_ID_HEADER] = request_id
                status = 413
                await response(scope, receive, send)
                return

            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise _BodyTooLarge()
                return message

            async def send_with_request_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                await send(message)

            try:
                await self.app(scope, limited_receive, send_with_request_id)
            except _BodyTooLarge:
                status = 413
                response = error_response(413, "payload_too_large", _TOO_LARGE_MESSAGE)
                await response(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            # the route's template (`/buy_orders/{order_id}`), never the raw path: bounded labels
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.observe_http(self.service, route, scope["method"], status, elapsed)
            logs.event(
                log,
                "http_request",
                logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO,
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 3),
            )
            logs.request_id_var.reset(token)


def _quiet_startup_failure(send: Send) -> Send:
    """A lifespan that failed to start has said why in one line (`services.startup.starting`):
    drop the traceback Starlette attaches to `lifespan.startup.failed`, which the server would log."""

    async def quiet_send(message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            message = {"type": "lifespan.startup.failed", "message": ""}
        await send(message)

    return quiet_send


class _BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed (chunked) body passes the limit.

    An HTTPException, because FastAPI turns any other exception raised while it
    reads the body into a 400 of its own shape; this one it re-raises, and
    `_http_error_handler` answers it as the documented 413.
    """

    def __init__(self) -> None:
        super().__init__(413, _TOO_LARGE_MESSAGE)


def _valid_request_id(candidate: str) -> str:
    if 0 < len(candidate) <= _MAX_REQUEST_ID_LENGTH and candidate.isprintable() and candidate.isascii():
        return candidate
    return logs.new_request_id()


ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


_T = TypeVar("_T")


PROBE_THREADS = 2
_probe_limiters: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter]" = (
    weakref.WeakKeyDictionary()
)


async def probe(check: Callable[..., _T], *args: Any) -> _T:
    """Run a blocking probe (readiness, a metrics scrape) on the process's probe threads: at most
    `PROBE_THREADS` at once, whatever the number of probes: a busy worker still answers its probes,
    and a storm of probes never blocks the event loop."""
    loop = asyncio.get_running_loop()
    limiter = _probe_limiters.get(loop)
    if limiter is None:
        limiter = _probe_limiters[loop] = anyio.CapacityLimiter(PROBE_THREADS)
    return await anyio.to_thread.run_sync(check, *args, limiter=limiter)


class SingleFlight(Generic[_T]):
    """Concurrent callers share one run of `work` in flight (300 probes at once: one check)."""

    def __init__(self, work: Callable[[], Awaitable[_T]]) -> None:
        self._work = work
        self._in_flight: asyncio.Future[_T] | None = None

    async def __call__(self) -> _T:
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._work())
            self._in_flight.add_done_callback(self._done)
        return await asyncio.shield(self._in_flight)

    def _done(self, future: "asyncio.Future[_T]") -> None:
        self._in_flight = None
        if not future.cancelled():
            future.exception()  # retrieved: a failure is each caller's, not an unretrieved warning


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def create_app(
    title: str,
    description: str,
    readiness: ReadinessCheck,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    exception_handlers: Mapping[type[Exception], ExceptionHandler] | None = None,
) -> FastAPI:
    """A FastAPI app with the shared middleware, error handlers and health probes.

    Its routes are `async` and never block the event loop. `exception_handlers`: more of them, for
    errors of the adapters a domain error does not cover (a database outage that escaped one).
    """
    # FastAPI's native OpenTelemetry is off: the suite's telemetry is its Prometheus metrics and
    # structured logs (each request's access line), and the check costs every request (~0.1 ms).
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    shared_readiness = SingleFlight(readiness)

    async def exposition() -> tuple[bytes, str]:
        return await probe(metrics.exposition)

    shared_exposition = SingleFlight(exposition)
    app.add_middleware(RequestContextMiddleware, service=title)
    app.add_exception_handler(errors.DomainError, domain_error_handler)
    app.add_exception_handler(HTTPException, _http_error_handler)
    for kind, handler in (exception_handlers or {}).items():
        app.add_exception_handler(kind, handler)
    app.add_exception_handler(Exception, unexpected_error_handler)

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="The backing services are reachable",
        responses={503: {"description": "a backing service is unreachable"}},
    )
    async def readyz() -> Response:
        checks = await shared_readiness()
        ready = all(checks.values())
        return json_response({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        body, content_type = await shared_exposition()  # the cap gauges read the database
        return Response(body, media_type=content_type)

    return app


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "a backing service is unavailable; retry after `Retry-After`"},
}
