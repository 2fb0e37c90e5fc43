"""The Coinbase stand-in run as its own process (as the cluster suite runs it, in a container):
its HTTP controls set rates and faults, and its spot answers follow them."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.services import free_port, wait_until

FAKE = Path(__file__).resolve().parents[1] / "support" / "fake_coinbase.py"


@pytest.fixture
def fake_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(FAKE), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/_fake/state", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=20, message="the fake Coinbase process to answer")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_rates_set_over_http_are_what_the_spot_price_answers(fake_url: str) -> None:
    changed = httpx.put(f"{fake_url}/_fake/state", json={"rates": {"GBP": "1000000", "EUR": "91234.5678"}})
    assert changed.status_code == 200
    assert changed.json()["rates"]["GBP"] == "1000000"

    spot = httpx.get(f"{fake_url}/v2/prices/BTC-GBP/spot")
    assert spot.json() == {"data": {"amount": "1000000", "base": "BTC", "currency": "GBP"}}
    assert httpx.get(f"{fake_url}/v2/prices/BTC-EUR/spot").json()["data"]["amount"] == "91234.5678"
    assert httpx.get(f"{fake_url}/v2/prices/BTC-USD/spot").json()["data"]["amount"] == "97012.34"  # untouched

    assert httpx.get(f"{fake_url}/_fake/state").json()["calls"] == {"GBP": 1, "EUR": 1, "USD": 1}


def test_a_fault_set_over_http_is_answered_until_reset(fake_url: str) -> None:
    assert httpx.put(f"{fake_url}/_fake/state", json={"mode": "error500"}).status_code == 200
    assert httpx.get(f"{fake_url}/v2/prices/BTC-USD/spot").status_code == 500

    reset = httpx.delete(f"{fake_url}/_fake/state")
    assert reset.json() == {
        "mode": "healthy",
        "rates": {"EUR": "91234.56", "GBP": "78901.23", "USD": "97012.34"},
        "delay_seconds": 0.0,
        "calls": {},
    }
    assert httpx.get(f"{fake_url}/v2/prices/BTC-USD/spot").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "sideways"},
        {"rates": {"USD": 97012.34}},  # a number: Coinbase answers strings, and so must the fake
        {"delay_seconds": -1},
        {"colour": "blue"},
        ["healthy"],
    ],
)
def test_a_control_request_it_cannot_apply_is_refused_and_changes_nothing(fake_url: str, body: object) -> None:
    refused = httpx.put(f"{fake_url}/_fake/state", json=body)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["id"] == "invalid_request"
    state = httpx.get(f"{fake_url}/_fake/state").json()
    assert state["mode"] == "healthy"
    assert state["rates"]["USD"] == "97012.34"
    assert state["delay_seconds"] == 0.0
