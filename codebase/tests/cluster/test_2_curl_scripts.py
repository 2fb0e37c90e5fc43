"""The README's curl scripts against the cluster, run as the README shows them."""

import json
import os
import subprocess
import uuid
from typing import Any

from tests.cluster.cluster import REPO, Api, converge, setting
from tests.cluster.session import RATES, Cluster


def script(*args: str, succeeds: bool = True) -> tuple[int, dict[str, Any]]:
    """Run a curl script from the repository root; the HTTP status and the JSON it printed.

    A script exits 0 exactly when the answer is a 2xx.
    """
    ports = {
        "CREATE_BUY_ORDER_PORT": setting("CREATE_BUY_ORDER_PORT", "8777"),
        "FETCH_BUY_ORDERS_PORT": setting("FETCH_BUY_ORDERS_PORT", "8778"),
    }
    done = subprocess.run(
        list(args), cwd=REPO, env={**os.environ, **ports}, capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode == 0) == succeeds, (
        f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    lines = done.stdout.splitlines()
    status_line = next(i for i, line in enumerate(lines) if line.startswith("HTTP "))
    body: dict[str, Any] = json.loads("\n".join(lines[status_line + 1 :]))
    return int(lines[status_line].split()[1]), body


def test_put_buy_order_sh_places_the_readme_order_and_replays_it_with_the_same_key(cluster: Cluster) -> None:
    status, order = script("./put_buy_order.sh", "USD", "123.45")
    assert status == 201
    assert (order["currency"], order["amount"]) == ("USD", "123.45")
    assert order["exchange_rate"] == RATES["USD"]
    assert order["bitcoin_amount"] == "0.00127252"  # the README's example, exactly

    status, replayed = script("./put_buy_order.sh", "USD", "123.45", order["idempotence_key"])
    assert status == 200
    assert replayed == order


def test_get_buy_order_sh_and_get_buy_orders_pass_last_ref_sh_page_through_the_orders(api: Api) -> None:
    # Enough orders for two pages of 10, the newest of them this test's.
    mine = [api.created("USD", f"{100 + n}.{n:02d}") for n in range(12)]
    converge(api, {order["id"]: order for order in mine})

    status, first = script("./get_buy_order.sh", "10")
    assert status == 200
    assert len(first["buy_orders"]) == 10
    assert first["has_more"] is True
    assert first["last_reference"] == first["buy_orders"][-1]["id"]
    newest_ten = [order["id"] for order in reversed(mine)][:10]
    assert [order["id"] for order in first["buy_orders"]] == newest_ten
    assert first == api.page(10)

    status, second = script("./get_buy_orders_pass_last_ref.sh", first["last_reference"], "10")
    assert status == 200
    assert second == api.page(10, first["last_reference"])
    assert [order["id"] for order in second["buy_orders"][:2]] == [mine[1]["id"], mine[0]["id"]]
    assert not {order["id"] for order in first["buy_orders"]} & {order["id"] for order in second["buy_orders"]}


def test_get_buy_orders_pass_last_ref_sh_fails_with_the_404_of_an_unknown_reference() -> None:
    status, body = script("./get_buy_orders_pass_last_ref.sh", str(uuid.uuid4()), "10", succeeds=False)
    assert status == 404
    assert body["detail"]["code"] == "unknown_reference"
