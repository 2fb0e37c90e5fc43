"""The committed OpenAPI documents (docs/openapi/) are what the services serve, and say enough."""

import json
from pathlib import Path
from typing import Any

import pytest

from btc_orders.openapi import ERRORS
from btc_orders.services.openapi_documents import COMMAND, rendered, service_documents

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "openapi"


@pytest.fixture(scope="module")
def served() -> dict[str, str]:
    return rendered(service_documents())


def test_the_committed_documents_are_what_the_services_serve(served: dict[str, str]) -> None:
    committed = {path.name: path.read_text() for path in COMMITTED.glob("*.json")}
    assert sorted(committed) == sorted(served), f"docs/openapi/ holds other files: run {COMMAND}"
    stale = sorted(name for name, text in served.items() if committed[name] != text)
    assert not stale, f"docs/openapi/{', '.join(stale)} differ from what the services serve: run {COMMAND}"


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]


@pytest.mark.parametrize("name", ["btc_price", "create_buy_order", "fetch_buy_orders", "gateway"])
def test_every_operation_has_its_id_headers_and_an_example_per_error(served: dict[str, str], name: str) -> None:
    document = json.loads(served[f"{name}.json"])
    ids = [op["operationId"] for _path, _method, op in operations(document)]
    assert len(ids) == len(set(ids))
    for path, method, operation in operations(document):
        assert "_" not in operation["operationId"], f"{method} {path}: FastAPI's generated id, not an explicit one"
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response.get("headers", {}), (path, status)
            if status == "503" and path not in ("/readyz",):
                assert "Retry-After" in response["headers"], (path, status)
            if status.startswith(("4", "5")) and path not in ("/readyz",):
                examples = response.get("content", {}).get("application/json", {}).get("examples", {})
                assert examples, f"{method} {path} {status}: no example"
                for code, example in examples.items():
                    if code in ERRORS:
                        assert ERRORS[code][0] == int(status), (path, status, code)
                        assert example["value"]["detail"]["code"] == code


def test_the_gateway_document_is_the_public_api(served: dict[str, str]) -> None:
    document = json.loads(served["gateway.json"])
    assert {(path, method) for path, method, _op in operations(document)} == {
        ("/buy_order", "put"),
        ("/capacity", "get"),
        ("/buy_orders", "get"),
        ("/buy_orders/{order_id}", "get"),
    }
    headers = {
        header
        for _path, _method, op in operations(document)
        for response in op["responses"].values()
        for header in response.get("headers", {})
    }
    assert {"Location", "Idempotent-Replayed", "Retry-After", "X-Request-ID", "Link", "Preference-Applied"} <= headers
