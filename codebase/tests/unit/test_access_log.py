"""The access log and the HTTP metrics of every service (web.py, logs.py, metrics.py): a line per
real request at INFO, probes and scrapes answered well only at DEBUG, the time of a line exact."""

import json
import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from btc_orders import logs, metrics, web

SERVICE = "unit_access_log"


@pytest.fixture
def ready() -> dict[str, bool]:
    return {"database": True}


@pytest.fixture
def client(ready: dict[str, bool]) -> Iterator[TestClient]:
    async def readiness() -> dict[str, bool]:
        return dict(ready)

    app = web.create_app(SERVICE, "test", readiness)

    @app.put("/buy_order")
    async def put_order() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as test_client:
        yield test_client


def access_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, int]]:
    return [
        (r.levelno, r.event_fields["path"], r.event_fields["status"])  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "http_request"
    ]


def test_real_requests_are_logged_at_info_and_probes_answered_well_are_not(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    assert client.put("/buy_order").status_code == 200
    assert client.get("/no/such/route").status_code == 404
    assert access_lines(caplog) == [(logging.INFO, "/buy_order", 200), (logging.INFO, "/no/such/route", 404)]


def test_probes_are_still_logged_at_debug(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert access_lines(caplog) == [(logging.DEBUG, "/readyz", 200), (logging.DEBUG, "/metrics", 200)]


def test_a_failing_probe_is_logged_at_info(
    client: TestClient, ready: dict[str, bool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ready["database"] = False
    assert client.get("/readyz").status_code == 503
    assert access_lines(caplog) == [(logging.INFO, "/readyz", 503)]


def test_every_request_is_counted_once_in_the_metrics(client: TestClient) -> None:
    def count(status: str) -> float:
        labels = {"service": SERVICE, "route": "/buy_order", "method": "PUT", "status": status}
        return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0

    def observed() -> float:
        labels = {"service": SERVICE, "route": "/buy_order", "method": "PUT"}
        return REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0

    before, before_observed = count("200"), observed()
    for _ in range(3):
        client.put("/buy_order")
    assert count("200") - before == 3
    assert observed() - before_observed == 3
    metrics.observe_http(SERVICE, "/buy_order", "PUT", 409, 0.001)
    assert count("409") == 1


def test_the_time_of_a_line_is_the_records_time_to_the_microsecond() -> None:
    rng = random.Random(16)
    stamps = [rng.uniform(1.7e9, 1.9e9) for _ in range(20_000)]
    stamps += [1.8e9 + k + 0.9999996 for k in range(100)]  # rounds up into the next second
    stamps += [1.8e9, 1.8e9 + 0.5, 1.8e9 + 0.0000004]
    for stamp in stamps:
        assert logs._timestamp(stamp) == datetime.fromtimestamp(stamp, UTC).isoformat(timespec="microseconds")


def test_a_line_is_one_json_object_with_the_event_its_fields_and_the_request_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("unit_logs", "INFO")
    try:
        token = logs.request_id_var.set("rid-16")
        logs.event(logging.getLogger("btc_orders.unit"), "order_created", currency="USD", sequence=7)
        logs.event(logging.getLogger("btc_orders.unit"), "quiet", logging.DEBUG)
        logs.request_id_var.reset(token)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
    assert len(lines) == 1
    line = lines[0]
    assert {k: line[k] for k in ("event", "level", "service", "request_id", "currency", "sequence", "logger")} == {
        "event": "order_created",
        "level": "info",
        "service": "unit_logs",
        "request_id": "rid-16",
        "currency": "USD",
        "sequence": 7,
        "logger": "btc_orders.unit",
    }
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
