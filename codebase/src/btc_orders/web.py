"""What every HTTP service shares: the app factory, errors, request ids, health probes.

Domain errors map to an HTTP status and the one error shape
`{"detail": {"code": ..., "message": ...}}` here and nowhere else.
"""

import asyncio
import contextvars
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from http import HTTPStatus
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
import orjson
import psycopg2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from btc_orders import logs, metrics
from btc_orders.adapters import db
from btc_orders.adapters.db_loop import NoConnectionFree
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


async def _domain_error_handler(_request: Request, error: Exception) -> Response:
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


async def _database_error_handler(request: Request, error: Exception) -> Response:
    """A database error that no adapter turned into a domain error: a 503 if it is an outage
    (`db.is_outage`, by its SQLSTATE), else a bug (500)."""
    if db.is_outage(error):
        return await _domain_error_handler(request, errors.ServiceUnavailable(db.outage_message("service's", error)))
    return await _unexpected_error_handler(request, error)


async def _unexpected_error_handler(_request: Request, error: Exception) -> Response:
    log.error("unhandled_error", exc_info=error)
    return error_response(500, "internal_error", "an unexpected error happened; it has been logged")


async def error_answer(request: Request, error: Exception) -> Response:
    """What the app's exception handlers answer to `error`, for a request answered ahead of
    FastAPI's routing (`FastRoute`): the handler of its nearest class, as
    Starlette looks it up (every app of `create_app` has one for `Exception`)."""
    handlers = request.app.exception_handlers
    handler = next(handlers[kind] for kind in type(error).__mro__ if kind in handlers)
    response: Response = await handler(request, error)
    return response


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


_Taken = TypeVar("_Taken")  # what a fast route's `take` makes of a request


class FastRoute(Generic[_Taken]):
    """ASGI middleware: `route`'s common case answered ahead of FastAPI's routing.

    FastAPI's work per request (its middleware layers, routing, dependency solving, parameters
    and body validated as the route's) was about a fifth of a service's CPU per request (tuning log
    in docs/benchmarks.md). Given inside the request context (`create_app`'s `middleware`, inside
    `RequestContextMiddleware`: request id, body limit, access line, metrics), it reads the request
    and asks `take(request, body)` for what a plainly well-formed one asks; `answer(request,
    adapters, taken)`, the function the route itself answers with, answers it, and any error
    is answered by the app's own exception handlers (`error_answer`).

    When `take` says None (anything it does not recognise as plainly well formed), the request goes
    on, body and all, to the FastAPI app, whose route is the contract: it documents the API and
    answers the rest, in FastAPI's validation shape. A request is never half taken: `take` only
    reads, and the FastAPI app never sees a request that was answered here.
    """

    def __init__(
        self,
        app: ASGIApp,
        route: APIRoute,
        take: Callable[[Request, bytes], _Taken | None],
        answer: Callable[[Request, Any, _Taken], Awaitable[Response]],
    ) -> None:
        self.app = app
        self.route = route
        self.methods = route.methods or set()
        self.take = take
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods or scope["path"] != self.route.path:
            await self.app(scope, receive, send)
            return
        messages = await _request_messages(receive)
        request = Request(scope)
        taken = None
        if messages[-1]["type"] == "http.request":  # else the client left while sending the body
            taken = self.take(request, b"".join(message.get("body", b"") for message in messages))
        if taken is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["route"] = self.route  # as FastAPI's router sets it: the access line's and metrics' route
        try:
            response = await self.answer(request, request.app.state.adapters, taken)
        except Exception as error:
            response = await error_answer(request, error)
        await response(scope, receive, send)


def fast_route(
    router: APIRouter,
    endpoint: Callable[..., Any],
    take: Callable[[Request, bytes], _Taken | None],
    answer: Callable[[Request, Any, _Taken], Awaitable[Response]],
) -> Middleware:
    """`FastRoute` for the route of `endpoint` in `router`, as `create_app`'s `middleware`."""
    route = next(route for route in router.routes if isinstance(route, APIRoute) and route.endpoint is endpoint)
    return Middleware(FastRoute[_Taken], route=route, take=take, answer=answer)


async def _request_messages(receive: Receive) -> list[Message]:
    """The request's messages until its body is whole, or until the client left."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive` for the FastAPI app: the messages already read, then the connection's own."""
    pending = list(reversed(messages))

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


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
    `PROBE_THREADS` at once, whatever the number of probes, and none of the request threads
    (the services' executors, `in_thread`): a busy worker still answers its probes, and a storm of probes
    never takes a thread from an order."""
    loop = asyncio.get_running_loop()
    limiter = _probe_limiters.get(loop)
    if limiter is None:
        limiter = _probe_limiters[loop] = anyio.CapacityLimiter(PROBE_THREADS)
    return await anyio.to_thread.run_sync(check, *args, limiter=limiter)


async def in_thread(executor: Executor, function: Callable[..., _T], *args: Any) -> _T:
    """`function(*args)`, a blocking call (a database statement), on one of `executor`'s threads, in
    the caller's context (its request id).

    The HTTP routes are `async` and hand off only this call: `run_in_executor` costs less per
    request than FastAPI running a whole sync route through anyio (tuning log in benchmarks.md).
    A service gives its executor one thread per pooled connection, so a request waits for a
    thread, never for a connection.
    """
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, function, *args)


async def on_loop_or_thread(
    executor: Executor, on_loop: Callable[..., Awaitable[_T]], blocking: Callable[..., _T], *args: Any
) -> _T:
    """`on_loop(*args)` awaited on the event loop (a statement on a `db_loop` connection), or the
    same work as `blocking(*args)` on a thread (`in_thread`) when every loop connection is busy."""
    try:
        return await on_loop(*args)
    except NoConnectionFree:
        return await in_thread(executor, blocking, *args)


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


def create_app(
    title: str,
    description: str,
    readiness: ReadinessCheck,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    middleware: Sequence[Middleware] = (),
) -> FastAPI:
    """A FastAPI app with the shared middleware, error handlers and health probes.

    Its routes are `async`: a blocking call goes to the service's own threads (`in_thread`).
    `middleware` runs inside the request context (`RequestContextMiddleware`), outermost first.
    """
    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)
    app.user_middleware.extend(middleware)  # add_middleware would put it outside the request context
    shared_readiness = SingleFlight(readiness)

    async def exposition() -> tuple[bytes, str]:
        return await probe(metrics.exposition)

    shared_exposition = SingleFlight(exposition)
    app.add_middleware(RequestContextMiddleware, service=title)
    app.add_exception_handler(errors.DomainError, _domain_error_handler)
    app.add_exception_handler(HTTPException, _http_error_handler)
    for database_error in (DBAPIError, PoolTimeout, psycopg2.Error):
        app.add_exception_handler(database_error, _database_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)

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
