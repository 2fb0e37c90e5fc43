"""Fluentd's copy of the logs (the `log` service; files per service and day in the
fluentd_logs volume): every service's events arrive tagged btc.<service>.<event>, and one
request's id follows its order from the create API through the relay to the worker."""

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from tests.cluster.cluster import APP_SERVICES, fluentd_records, now, wait_for
from tests.cluster.session import Cluster


def test_every_service_logs_to_fluentd_tagged_and_the_request_id_reaches_the_worker(cluster: Cluster) -> None:
    api = cluster.api
    started = now() - timedelta(seconds=2)  # the events' own times have microseconds; the clock is shared
    create_id = f"cluster-logs-{uuid.uuid4().hex}"
    fetch_id = f"cluster-logs-{uuid.uuid4().hex}"
    created = api.put_order("USD", "12.34", request_id=create_id)
    assert created.status_code == 201, created.text
    assert created.headers["X-Request-ID"] == create_id
    order = created.json()
    api.projected(order["id"])
    fetched = api.request("GET", f"{api.fetch_url}/buy_orders/{order['id']}", headers={"X-Request-ID": fetch_id})
    assert fetched.headers["X-Request-ID"] == fetch_id

    def arrived() -> list[dict[str, Any]]:
        records = [r for r in fluentd_records(cluster.env) if str(r.get("tag", "")).startswith("btc.")]
        by_service = {service: [r for r in records if r.get("service") == service] for service in APP_SERVICES}
        missing = [service for service, found in by_service.items() if not found]
        assert not missing, f"no record of {missing} in /fluentd/log"
        quiet = [
            service
            for service, found in by_service.items()
            if service != "migration" and not any(_time(r) >= started for r in found)
        ]
        assert not quiet, f"nothing logged since the test started by {quiet}"
        mine = [r for r in records if r.get("request_id") == create_id]
        seen = {(r["service"], r["event"]) for r in mine if r.get("order_id", order["id"]) == order["id"]}
        for wanted in (
            ("create_buy_order", "order_created"),
            ("outbox_relay", "event_published"),
            ("read_model_sync", "event_applied"),
        ):
            assert wanted in seen, f"no {wanted[1]} record of {wanted[0]} with the create request's id; seen {seen}"
        fetch = [r for r in records if r.get("request_id") == fetch_id]
        assert any(r["service"] == "fetch_buy_orders" and r["event"] == "http_request" for r in fetch), fetch
        return records

    records = wait_for("every service's events to arrive in Fluentd's files", arrived, 60, interval=2)

    for record in records:
        # A library's message (uvicorn's "Started server process [9]") is tagged with its tag-safe form.
        label = re.sub(r"[^A-Za-z0-9_-]", "_", record["event"]) or "event"
        assert record["tag"] == f"btc.{record['service']}.{label}", record
        assert re.fullmatch(rf"{record['service']}\.\d{{8}}\.log", record["_file"]), record
        assert record.get("logged_at"), record
    worker = next(
        r
        for r in records
        if r["service"] == "read_model_sync" and r["event"] == "event_applied" and r.get("order_id") == order["id"]
    )
    assert worker["request_id"] == create_id


def _time(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["time"]))
