"""Logs: JSON lines on stdout always, the same events to Fluentd when configured."""

import json
import time
import uuid

import httpx

from btc_orders.logs import FLUENTD_TIMEOUT_SECONDS
from tests.e2e.conftest import Suite
from tests.support.fluentd_receiver import ForwardReceiver
from tests.support.services import free_port, wait_until


def create(url: str, request_id: str) -> httpx.Response:
    body = {"currency": "USD", "amount": "12.34", "idempotence_key": str(uuid.uuid4())}
    return httpx.put(f"{url}/buy_order", json=body, headers={"X-Request-ID": request_id}, timeout=10)


def test_events_reach_fluentd_tagged_by_service_and_event_with_the_request_id(suite: Suite) -> None:
    receiver = ForwardReceiver()
    try:
        fluentd = {"FLUENTD_HOST": "127.0.0.1", "FLUENTD_PORT": str(receiver.port)}
        suite.start("btc_price", **fluentd)
        api = suite.start("create_buy_order", **fluentd).url
        assert create(api, "fluent-trace-1").status_code == 201
        wait_until(lambda: "btc.create_buy_order.order_created" in receiver.tags(), 10, 0.05, "order_created")
        created = next(r for tag, _, r in receiver.entries if tag == "btc.create_buy_order.order_created")
        assert created["request_id"] == "fluent-trace-1"
        assert created["bitcoin_amount"] == "0.00012721"  # 12.34 / 97012.34, rounded up
        # btc_price logged the same request id: it travels with the rate request.
        wait_until(
            lambda: any(
                tag == "btc.btc_price.http_request" and r.get("request_id") == "fluent-trace-1"
                for tag, _, r in receiver.entries
            ),
            10,
            0.05,
            "btc_price's log line",
        )
    finally:
        receiver.close()


def test_stdout_has_one_json_object_a_line_with_the_request_id(suite: Suite) -> None:
    suite.start("btc_price")
    process = suite.start("create_buy_order")
    assert create(process.url, "stdout-trace-7").status_code == 201
    wait_until(lambda: "order_created" in process.logs(), 10, 0.05, "the order_created line")
    lines = [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
    created = next(line for line in lines if line["event"] == "order_created")
    assert created["request_id"] == "stdout-trace-7"
    assert created["service"] == "create_buy_order"


def test_a_dead_fluentd_neither_fails_nor_waits_up_requests(suite: Suite) -> None:
    dead = {"FLUENTD_HOST": "127.0.0.1", "FLUENTD_PORT": str(free_port())}  # nothing listens there
    suite.start("btc_price", **dead)
    api = suite.start("create_buy_order", **dead).url
    slowest = 0.0
    for index in range(30):
        started = time.perf_counter()
        assert create(api, f"dead-fluentd-{index}").status_code == 201
        slowest = max(slowest, time.perf_counter() - started)
    # Not a speed test: a request that waited on the Fluentd connection would take at
    # least the sender's connect timeout; none does.
    assert slowest < FLUENTD_TIMEOUT_SECONDS
