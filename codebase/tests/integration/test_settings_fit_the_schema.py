"""Settings are validated against what the code can do with them: the largest BTC_CAP that
validation accepts is exactly the largest the cap ledger's columns hold."""

import psycopg
import pytest

from btc_orders import settings
from btc_orders.adapters.cap_ledger import CapLedger
from btc_orders.domain import cap, money
from tests.support.services import Databases, opened_pool


def _settings(monkeypatch: pytest.MonkeyPatch, btc_cap: str) -> settings.CreateBuyOrderSettings:
    monkeypatch.setenv("WRITE_MODEL_DB_URL", "postgresql://x/y")
    monkeypatch.setenv("BTC_PRICE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("BTC_CAP", btc_cap)
    return settings.CreateBuyOrderSettings()


@pytest.mark.anyio
async def test_the_largest_accepted_cap_is_stored_and_one_satoshi_more_is_refused(
    databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    largest = money.format_btc(money.satoshis_to_btc(cap.MAX_CAP_SATOSHIS))
    assert largest == "92233720368.54775807"
    accepted = _settings(monkeypatch, largest)
    async with opened_pool(databases.write_url, 2) as pool:
        ledger = CapLedger(pool, accepted.cap_ledger_slots)
        await ledger.ensure_cap(accepted.btc_cap_satoshis)
        assert await ledger.cap_status() == (accepted.btc_cap, accepted.btc_cap)

        with pytest.raises(ValueError, match="BTC_CAP"):
            _settings(monkeypatch, "92233720368.54775808")
        # and the database indeed holds no more: the limit is the schema's, not a guess
        with pytest.raises(psycopg.DataError):
            await CapLedger(pool, 16).ensure_cap(cap.MAX_CAP_SATOSHIS + 1)
