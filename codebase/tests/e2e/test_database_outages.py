"""A database that cannot serve (here: turned read-only, as after a failover to a standby) is a
503 with Retry-After on every API, never a 500; the APIs serve again once it is back."""

import uuid

import httpx

from tests.e2e.conftest import Suite
from tests.support.services import admin_connection


def _set_read_only(database: str, read_only: bool) -> None:
    """`default_transaction_read_only` on the throwaway database, and its sessions ended (so
    every new one starts under the new default)."""
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = {'on' if read_only else 'off'}")
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
    connection.close()


def _order() -> dict[str, str]:
    return {"currency": "USD", "amount": "10.00", "idempotence_key": str(uuid.uuid4())}


def test_the_create_api_answers_a_read_only_write_model_with_503_and_retry_after(suite: Suite) -> None:
    suite.start("btc_price")
    api = suite.start("create_buy_order").url
    assert httpx.put(f"{api}/buy_order", json=_order(), timeout=10).status_code == 201

    _set_read_only(suite.databases.write_name, True)
    try:
        answers = [httpx.put(f"{api}/buy_order", json=_order(), timeout=10) for _ in range(6)]
        assert [response.status_code for response in answers] == [503] * 6, [r.text for r in answers]
        for response in answers:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["detail"]["code"] == "service_unavailable"
        assert "read-only" in answers[-1].json()["detail"]["message"]
    finally:
        _set_read_only(suite.databases.write_name, False)

    body = _order()
    stored = [httpx.put(f"{api}/buy_order", json=body, timeout=10) for _ in range(3)]
    assert 201 in [response.status_code for response in stored], [r.text for r in stored]
    assert {response.status_code for response in stored} <= {201, 200, 503}


def test_the_fetch_api_never_answers_500_while_its_read_model_turns_read_only(suite: Suite) -> None:
    suite.start("btc_price")
    create = suite.start("create_buy_order").url
    fetch = suite.start("fetch_buy_orders").url
    order = httpx.put(f"{create}/buy_order", json=_order(), timeout=10).json()

    _set_read_only(suite.databases.read_name, True)
    try:
        answers = [httpx.get(f"{fetch}/buy_orders", timeout=10) for _ in range(4)]
        answers += [httpx.get(f"{fetch}/buy_orders/{order['id']}", timeout=10) for _ in range(4)]
        for response in answers:
            assert response.status_code in (200, 404, 503), response.text
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) >= 1
        # reads need no write: once its connections are replaced (the first answers may be the 503
        # of a lost connection), the read-only copy is served
        assert answers[-1].status_code in (200, 404)
    finally:
        _set_read_only(suite.databases.read_name, False)
