"""The OpenAPI contract: documented headers, error examples, and the document each app serves.

Routes describe their errors with `error(description, *codes)` (the examples come from
`ERRORS`, one per error code) and their headers with `headers(*names)`. `install(app)` makes the
app serve `describe(app)`: FastAPI's document plus `X-Request-ID` on every response,
`Retry-After` on every 503 and an example of the validation shape on every 422. The documents
are committed under `docs/openapi/` by `python -m btc_orders.services.openapi_documents --write docs/openapi`, and
a test fails when what an app serves differs from them.
"""

from typing import Any

from fastapi import FastAPI

from btc_orders.web import ErrorBody

# one example per error code: (status, message, extra fields)
ERRORS: dict[str, tuple[int, str, dict[str, str]]] = {
    "idempotence_key_conflict": (
        400,
        "the Idempotency-Key header and the body's idempotence_key differ; send one, or the same in both",
        {},
    ),
    "unknown_reference": (404, "last_reference 0b0d8a52-6a3b-4f59-9d55-6f9c1c0e2f11 is not the id of any order", {}),
    "order_not_found": (
        404,
        "no order with id 0b0d8a52-6a3b-4f59-9d55-6f9c1c0e2f11 (yet: a new order may take a moment to appear)",
        {},
    ),
    "not_found": (404, "Not Found", {}),
    "btc_cap_exceeded": (
        409,
        "this order needs 0.50000000 BTC but only 0.25000000 BTC is still available under the cap",
        {"requested_btc": "0.50000000", "available_btc": "0.25000000"},
    ),
    "order_in_flight": (409, "an order with this idempotence_key is being stored right now; retry shortly", {}),
    "payload_too_large": (413, "request bodies are limited to 16384 bytes", {}),
    "unsupported_media_type": (
        415,
        "send the body as JSON, with the header Content-Type: application/json (not text/plain)",
        {},
    ),
    "idempotence_key_reused": (
        422,
        "idempotence_key 5fa733ae-82b4-4ac0-8478-35ff30dae879 already names an order of 123.45 USD; "
        "use a new key for a different order",
        {},
    ),
    "rate_unavailable": (503, "no fresh USD rate can be had from Coinbase right now", {}),
    "service_unavailable": (503, "the write-model database is unavailable", {}),
}

HEADERS: dict[str, dict[str, Any]] = {
    "Location": {
        "description": "where the order is read: `/buy_orders/{id}` (relative: the gateway serves both APIs on "
        "one origin), or absolute under `PUBLIC_FETCH_URL` when that is set",
        "schema": {"type": "string", "examples": ["/buy_orders/0b0d8a52-6a3b-4f59-9d55-6f9c1c0e2f11"]},
    },
    "Idempotent-Replayed": {
        "description": "`true`: this is the order the key already named, not a new one",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1, "examples": [1]},
    },
    "X-Request-ID": {
        "description": "the request's id: the client's `X-Request-ID` when printable ASCII of at most 128 "
        "characters, else a new one; on every log line of every process that handled the request",
        "schema": {"type": "string", "examples": ["6f1c2b7e9d3a4c58"]},
    },
    "Link": {
        "description": 'RFC 8288 links to the older (`rel="next"`) and newer (`rel="prev"`) pages where such '
        "pages exist, as relative references with every other query parameter kept",
        "schema": {
            "type": "string",
            "examples": [
                '</buy_orders?page_size=10&last_reference=0b0d8a52-6a3b-4f59-9d55-6f9c1c0e2f11>; rel="next", '
                '</buy_orders?page_size=10&first_reference=7c6f0f4e-2d7b-4b7e-8a43-3f1b2f7f9a10>; rel="prev"'
            ],
        },
    },
    "Preference-Applied": {
        "description": "RFC 7240: the `wait` preference honoured, in seconds (the request's, capped by "
        "`READ_YOUR_WRITE_MAX_WAIT_SECONDS`); absent when the request did not wait",
        "schema": {"type": "string", "examples": ["wait=5"]},
    },
}


def headers(*names: str) -> dict[str, Any]:
    return {name: HEADERS[name] for name in names}


def error(description: str, *codes: str, with_headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A documented error response of the one error shape, with an example per code."""
    examples = {}
    for code in codes:
        _status, message, extra = ERRORS[code]
        examples[code] = {"value": {"detail": {"code": code, "message": message, **extra}}}
    response: dict[str, Any] = {
        "model": ErrorBody,
        "description": description,
        "content": {"application/json": {"examples": examples}},
    }
    if with_headers:
        response["headers"] = headers(*with_headers)
    return response


VALIDATION_EXAMPLE = {
    "detail": [
        {
            "type": "greater_than_equal",
            "loc": ["query", "page_size"],
            "msg": "Input should be greater than or equal to 1",
            "input": "0",
            "ctx": {"ge": 1},
        }
    ]
}


# the probes every service shares (`web.create_app`)
SHARED_OPERATIONS = {"/healthz": "getHealth", "/readyz": "getReadiness"}


def describe(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with what every response shares."""
    document = app.openapi_schema or _generate(app)
    for path, path_item in document.get("paths", {}).items():
        for operation in path_item.values():
            if path in SHARED_OPERATIONS:
                operation["operationId"] = SHARED_OPERATIONS[path]
            for status, response in operation.get("responses", {}).items():
                shared = response.setdefault("headers", {})
                shared.setdefault("X-Request-ID", HEADERS["X-Request-ID"])
                if status == "503" and path not in SHARED_OPERATIONS:  # the probes' 503 is their own body
                    shared.setdefault("Retry-After", HEADERS["Retry-After"])
                if status == "422":
                    content = response.setdefault("content", {}).setdefault("application/json", {})
                    examples = content.setdefault("examples", {})
                    examples.setdefault("validation_error", {"value": VALIDATION_EXAMPLE})
    app.openapi_schema = document
    return document


def _generate(app: FastAPI) -> dict[str, Any]:
    from fastapi.openapi.utils import get_openapi

    return get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )


def install(app: FastAPI) -> None:
    """Serve `describe(app)` at `/openapi.json` (and `/docs`)."""
    app.openapi = lambda: describe(app)  # type: ignore[method-assign]
