"""The gateway's per-address rate limit, GATEWAY_RATE_LIMIT_PER_SECOND with bursts of
GATEWAY_RATE_LIMIT_BURST: .env's values (200/s, bursts of 1000) are more than one client on
this 2-core machine can send through the gateway (about 170 requests a second), so the test
starts the gateway with lower ones in the environment, which wins over .env, as a user
would, goes over them, and then gives the gateway .env's values back.

LEAD: written against docker/gateway/templates/default.conf.template (one zone for both
public ports, `burst=... nodelay`, 429 from @rate_limited); adjust LIMITED if the limit moves.
"""

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.cluster.cluster import Deadline, compose, containers, of_service, setting, wait_for
from tests.cluster.session import Cluster

LOW_RATE, LOW_BURST = 5, 10
LIMITED = "/openapi.json"  # on the create port: limited like every public path, and the cheapest (a file)
THREADS = 16
SENT = 200  # in well under a second or two: far over 10 + 5/s
SECONDS = 60


def restart_gateway(cluster: Cluster, env: dict[str, str], healthy: bool) -> None:
    """The gateway recreated with `env`; answering, and with `healthy` its healthcheck passed too."""
    compose("up", "--detach", "--no-deps", "gateway", timeout=180, env=env)
    cluster.api.reconnect()

    def up() -> bool:
        if healthy:
            [gateway] = [c for c in of_service(containers(cluster.env), "gateway") if c.running]
            assert gateway.health == "healthy", f"the gateway is {gateway.health}"
        try:
            return httpx.get(f"{cluster.api.create_url}/capacity", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the restarted gateway to answer" + (", its healthcheck healthy" if healthy else ""), up, 120, 0.5)


def hammer(url: str, count: int) -> tuple[Counter[int], list[httpx.Response], float]:
    """`count` GETs of `url` from one client as fast as THREADS threads go."""
    statuses: Counter[int] = Counter()
    refused: list[httpx.Response] = []
    lock = threading.Lock()
    deadline = Deadline(SECONDS)
    left = count
    started = time.monotonic()
    with httpx.Client(timeout=15, limits=httpx.Limits(max_connections=THREADS)) as client:

        def send() -> None:
            nonlocal left
            while not deadline.expired():
                with lock:
                    if left == 0:
                        return
                    left -= 1
                response = client.get(url)
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 429:
                        refused.append(response)

        threads = [threading.Thread(target=send) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SECONDS + 30)
    return statuses, refused, time.monotonic() - started


@pytest.mark.timeout(900)
def test_one_client_over_the_gateway_rate_limit_gets_429_rate_limited_then_gets_through_again(
    cluster: Cluster,
) -> None:
    per_second = int(setting("GATEWAY_RATE_LIMIT_PER_SECOND"))
    burst = int(setting("GATEWAY_RATE_LIMIT_BURST"))
    assert per_second > LOW_RATE and burst > LOW_BURST, "the test's limit must be below .env's"
    url = f"{cluster.api.create_url}{LIMITED}"
    low = {**cluster.env, "GATEWAY_RATE_LIMIT_PER_SECOND": str(LOW_RATE), "GATEWAY_RATE_LIMIT_BURST": str(LOW_BURST)}

    restart_gateway(cluster, low, healthy=False)
    try:
        statuses, refused, elapsed = hammer(url, SENT)
        assert sum(statuses.values()) == SENT, dict(statuses)
        assert set(statuses) <= {200, 429}, dict(statuses)
        assert refused, f"{SENT} requests in {elapsed:.1f} s, none refused: {dict(statuses)}"
        # What the limit lets through: the burst at once, then the rate (and a request or two
        # of nginx's millisecond accounting).
        assert LOW_BURST <= statuses[200] <= LOW_BURST + LOW_RATE * elapsed + 2, (dict(statuses), elapsed)
        for response in refused:
            assert response.headers["content-type"].startswith("application/json"), response.headers
            assert int(response.headers["Retry-After"]) >= 1, response.headers
            body = response.json()
            assert set(body) == {"detail"}, body
            assert body["detail"]["code"] == "rate_limited", body
            assert isinstance(body["detail"]["message"], str) and body["detail"]["message"], body

        def through_again() -> bool:
            return httpx.get(url, timeout=5).status_code == 200

        wait_for("the client to get through the gateway again", through_again, 30, interval=0.5)
    finally:
        restart_gateway(cluster, cluster.env, healthy=True)

    # With .env's limit back, the same client's traffic passes as long as it stays in the burst.
    statuses, _, _ = hammer(url, min(SENT, burst // 2))
    assert statuses == {200: min(SENT, burst // 2)}, dict(statuses)
