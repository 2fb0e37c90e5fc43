"""The gateway's per-address rate limit (GATEWAY_RATE_LIMIT_PER_SECOND, with bursts of
GATEWAY_RATE_LIMIT_BURST, in .env): one client going over it gets 429s in the project's error
shape with a Retry-After, and gets through again once it slows down.

LEAD: written against docker/gateway/templates/default.conf.template as it is being made
(one zone for both public ports, `burst=... nodelay`); adjust LIMITED if the limit moves.
"""

import threading
import time
from collections import Counter

import httpx

from tests.cluster.cluster import Deadline, setting, wait_for
from tests.cluster.conftest import Cluster

THREADS = 32
LIMITED = "/healthz"  # on the create port: limited like every public path, and the cheapest to answer
WANTED_REFUSALS = 5
SECONDS = 60


def test_one_client_over_the_gateway_rate_limit_gets_429_rate_limited_then_gets_through_again(
    cluster: Cluster,
) -> None:
    per_second = int(setting("GATEWAY_RATE_LIMIT_PER_SECOND"))
    burst = int(setting("GATEWAY_RATE_LIMIT_BURST"))
    url = f"{cluster.api.create_url}{LIMITED}"
    refused: list[httpx.Response] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    enough = threading.Event()
    deadline = Deadline(SECONDS)
    started = time.monotonic()

    # As fast as THREADS clients can: past the burst, then faster than the rate refills it.
    with httpx.Client(timeout=15, limits=httpx.Limits(max_connections=THREADS)) as client:

        def hammer() -> None:
            while not enough.is_set() and not deadline.expired():
                response = client.get(url)
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 429:
                        refused.append(response)
                        if len(refused) >= WANTED_REFUSALS:
                            enough.set()

        threads = [threading.Thread(target=hammer) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SECONDS + 30)
    elapsed = time.monotonic() - started

    sent = sum(statuses.values())
    assert refused, (
        f"{sent} requests in {elapsed:.1f} s ({sent / elapsed:.0f}/s) from one client, none refused: "
        f"{dict(statuses)}; the limit is {per_second}/s with bursts of {burst}"
    )
    assert set(statuses) <= {200, 429}, dict(statuses)
    # Not refused before most of the burst was spent (requests of the tests before may still count).
    assert statuses[200] >= burst // 2, f"refused before the burst of {burst} was spent: {dict(statuses)}"
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
