"""`./run.sh --local` and the curl scripts: an order goes in, is read back at once through the
201's `Location` (`PUBLIC_FETCH_URL`) with `Prefer: wait`, counts in `/capacity`, and comes out."""

import os
import signal
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx

from tests.e2e.conftest import Suite
from tests.support.services import base_env, free_port, wait_until

REPO = Path(__file__).resolve().parents[3]


def script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / name), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_run_local_serves_the_suite_and_the_curl_scripts_show_an_order_in_and_out(suite: Suite) -> None:
    ports = {name: str(free_port()) for name in ("CREATE_BUY_ORDER_PORT", "FETCH_BUY_ORDERS_PORT", "BTC_PRICE_PORT")}
    env = base_env(
        **ports,
        WRITE_MODEL_DB_URL=suite.databases.write_url,
        READ_MODEL_DB_URL=suite.databases.read_url,
        AMQP_URL=suite.amqp_url,
        COINBASE_API_URL=suite.coinbase.url,
        PATH=os.environ["PATH"],
    )
    log = (suite.directory / "run_local.log").open("w")
    run = subprocess.Popen(
        ["bash", str(REPO / "run.sh"), "--local"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        fetch = f"http://127.0.0.1:{ports['FETCH_BUY_ORDERS_PORT']}"
        create = f"http://127.0.0.1:{ports['CREATE_BUY_ORDER_PORT']}"

        def ready() -> bool:
            try:
                return all(httpx.get(f"{url}/readyz").status_code == 200 for url in (create, fetch))
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, 0.2, "run.sh --local to serve")
        key = str(uuid.uuid4())
        placed = script("put_buy_order.sh", "-i", "EUR", "42.00", key, env=env)
        assert placed.returncode == 0, placed.stdout + placed.stderr
        assert "201" in placed.stdout and key in placed.stdout
        # -i shows the headers; with two ports, the Location names the fetch API (PUBLIC_FETCH_URL)
        location = next(line for line in placed.stdout.splitlines() if line.lower().startswith("location:"))
        url = location.split(":", 1)[1].strip()
        assert url.startswith(f"http://localhost:{ports['FETCH_BUY_ORDERS_PORT']}/buy_orders/"), location

        # followed at once: read your own write, the request waiting for the projection
        followed = httpx.get(url, headers={"Prefer": "wait=20"}, timeout=30)
        assert followed.status_code == 200 and followed.json()["idempotence_key"] == key
        assert followed.headers["preference-applied"] == "wait=10"  # READ_YOUR_WRITE_MAX_WAIT_SECONDS in .env
        used = Decimal(followed.json()["bitcoin_amount"])
        capacity = httpx.get(f"{create}/capacity")
        assert capacity.status_code == 200, capacity.text
        cap = Decimal(100)  # BTC_CAP in .env
        assert capacity.json() == {
            "cap_btc": f"{cap:.8f}",
            "used_btc": f"{used:.8f}",
            "available_btc": f"{cap - used:.8f}",
        }

        def listed() -> bool:
            page = script("get_buy_order.sh", "5", env=env)
            return page.returncode == 0 and key in page.stdout

        wait_until(listed, 20, 0.2, "the order in the first page")
        first = httpx.get(f"{fetch}/buy_orders", params={"page_size": 1}).json()
        after = script("get_buy_orders_pass_last_ref.sh", first["last_reference"], "5", env=env)
        assert after.returncode == 0, after.stdout + after.stderr
        assert key not in after.stdout  # the only order was on the first page
        filtered = script("get_buy_order.sh", "-i", "5", "currency=EUR", env=env)
        assert filtered.returncode == 0 and key in filtered.stdout
        assert "x-request-id:" in filtered.stdout.lower()
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        status = run.wait(30)
        log.close()
    assert status == 0, (suite.directory / "run_local.log").read_text()[-3000:]
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-s", str(run.pid)], capture_output=True, text=True, check=False)
    assert leftovers.stdout.strip() == "", "run.sh left processes running"
