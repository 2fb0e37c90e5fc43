"""Scaled out as the README says, a concurrent burst asking for more BTC than the cap has left:
every order stored is projected exactly once, and the cap holds to the satoshi. Then the cap's
boundary: an order that takes the total exactly to the cap is stored, one satoshi more is not.

Last in the run: these tests use up the cap (no order can be stored afterwards, until the
cluster gets new volumes).
"""

import time
import uuid
from decimal import ROUND_DOWN, Decimal

import pytest

from tests.cluster.cluster import (
    SATOSHI,
    Burst,
    compose,
    containers,
    converge,
    docker,
    limited,
    of_service,
    wait_for,
)
from tests.cluster.session import GBP_RATE, Cluster

# The README's command, as it is written there.
SCALE_OUT = ("up", "-d", "--scale", "create_buy_order=3", "--scale", "outbox_relay=2", "--scale", "read_model_sync=2")
# Back to one of each: only those services (--no-deps: the rest, the migration too, stay as they are).
SCALE_BACK = (
    *("up", "-d", "--no-deps", "--scale", "create_buy_order=1", "--scale", "outbox_relay=1"),
    *("--scale", "read_model_sync=1", "create_buy_order", "outbox_relay", "read_model_sync"),
)
ORDERS = 300
THREADS = 32
# Each order asks for 1/200 of what is left, so the burst asks for 1.5 times that.
SHARE = 200


def wait_scaled(cluster: Cluster, counts: dict[str, int]) -> None:
    def scaled() -> bool:
        everything = containers(cluster.env)
        for service, count in counts.items():
            running = [c for c in of_service(everything, service) if c.running]
            assert len(running) == count, f"{len(running)} running {service} containers, not {count}"
        unhealthy = {c.name: c.health for c in everything if c.running and c.health not in (None, "healthy")}
        assert not unhealthy, f"not healthy yet: {unhealthy}"
        return True

    wait_for(f"the cluster to run {counts}, every healthcheck healthy", scaled, 180, interval=2)


def wait_every_replica_serves(cluster: Cluster, service: str) -> None:
    """Requests through the gateway reach every replica (it re-resolves the service's name)."""
    token = f"spread-{uuid.uuid4().hex}"
    since = str(int(time.time()) - 1)  # a Unix time: no time zone to get wrong
    replicas = [c for c in of_service(containers(cluster.env), service) if c.running]
    sent = 0

    def every_replica_served() -> bool:
        nonlocal sent
        for _ in range(10):
            sent += 1
            # a real route, logged at INFO (probes answered well are logged at DEBUG: web.QUIET_ROUTES)
            url = f"{cluster.api.create_url}/capacity"
            cluster.api.request("GET", url, headers={"X-Request-ID": f"{token}-{sent}"})
        idle = [c.name for c in replicas if token not in docker("logs", "--since", since, c.id)]
        assert not idle, f"{sent} requests through the gateway, none reached {idle}"
        return True

    wait_for(f"the gateway to spread requests over every {service} replica", every_replica_served, 60)


@pytest.mark.timeout(900)
def test_scaled_out_a_burst_at_the_cap_is_projected_exactly_once_and_never_exceeds_the_cap(cluster: Cluster) -> None:
    api = cluster.api
    available = api.available_btc()
    share = (available / SHARE).quantize(SATOSHI, rounding=ROUND_DOWN)
    assert share > 0, f"too little of the cap is left for this test: {available} BTC"
    amount = f"{share * GBP_RATE:.2f}"  # GBP at 1,000,000: exactly `share` BTC

    compose(*SCALE_OUT, timeout=300, env=cluster.env)
    try:
        wait_scaled(cluster, {"create_buy_order": 3, "outbox_relay": 2, "read_model_sync": 2})
        wait_every_replica_serves(cluster, "create_buy_order")

        burst = Burst(api, limited(ORDERS, lambda _: ("GBP", amount)), threads=THREADS).start()
        burst.join()
        assert not burst.errors, burst.errors[:5]
        statuses = burst.statuses()
        assert set(statuses) <= {201, 409}, statuses
        created = burst.created()
        for order in created.values():
            assert (order["exchange_rate"], Decimal(order["bitcoin_amount"])) == ("1000000", share), order
        for response in burst.answers.values():
            if response.status_code == 409:
                detail = response.json()["detail"]
                assert detail["code"] == "btc_cap_exceeded", detail
                assert Decimal(detail["requested_btc"]) == share, detail
                assert Decimal(detail["available_btc"]) < share, detail  # refused only when it did not fit
        assert statuses[409] > 0, f"the burst never reached the cap: {statuses}"

        left = api.available_btc()
        assert left == available - len(created) * share  # exact: every stored order counted once
        assert 0 <= left < share, f"{left} BTC left, room for another order of {share}"

        orders = converge(api, created)
        refused_keys = {key for key, response in burst.answers.items() if response.status_code == 409}
        assert not refused_keys & {order["idempotence_key"] for order in orders}, "a refused order was stored"
        total = sum((Decimal(order["bitcoin_amount"]) for order in orders), Decimal(0))
        assert total <= cluster.btc_cap
        assert total == cluster.btc_cap - left
    finally:
        compose(*SCALE_BACK, timeout=300, env=cluster.env)
        wait_scaled(cluster, {"create_buy_order": 1, "outbox_relay": 1, "read_model_sync": 1})


def test_an_order_taking_the_total_exactly_to_the_cap_is_stored_and_one_satoshi_more_is_refused(
    cluster: Cluster,
) -> None:
    api = cluster.api
    available = api.available_btc()
    filled = None
    if available > 0:
        filled = api.put_order("GBP", f"{available * GBP_RATE:.2f}")  # exactly what is left
        assert filled.status_code == 201, filled.text
        assert Decimal(filled.json()["bitcoin_amount"]) == available

    one_more = api.put_order("GBP", "0.01")  # one satoshi
    assert one_more.status_code == 409, one_more.text
    detail = one_more.json()["detail"]
    assert detail["code"] == "btc_cap_exceeded"
    assert (detail["requested_btc"], detail["available_btc"]) == ("0.00000001", "0.00000000")
    assert isinstance(detail["message"], str) and detail["message"]
    assert api.put_order("USD", "0.01").status_code == 409  # whatever the currency

    if filled is not None:
        order = filled.json()
        replayed = api.put_order("GBP", order["amount"], order["idempotence_key"])
        assert replayed.status_code == 200  # a replay is answered even with the cap full
        assert replayed.content == filled.content
        orders = converge(api, {order["id"]: order})
    else:
        orders = api.every_order()
    assert sum((Decimal(o["bitcoin_amount"]) for o in orders), Decimal(0)) == cluster.btc_cap
