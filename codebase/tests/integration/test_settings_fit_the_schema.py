"""Settings are validated against what the code can do with them: the largest BTC_CAP that
validation accepts is exactly the largest the cap ledger's columns hold."""

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DataError

from btc_orders import settings
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import cap, money


def _settings(monkeypatch: pytest.MonkeyPatch, btc_cap: str) -> settings.CreateBuyOrderSettings:
    monkeypatch.setenv("WRITE_MODEL_DB_URL", "postgresql://x/y")
    monkeypatch.setenv("BTC_PRICE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("BTC_CAP", btc_cap)
    return settings.CreateBuyOrderSettings()


def test_the_largest_accepted_cap_is_stored_and_one_satoshi_more_is_refused(
    write_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    largest = money.format_btc(money.satoshis_to_btc(cap.MAX_CAP_SATOSHIS))
    assert largest == "92233720368.54775807"
    accepted = _settings(monkeypatch, largest)
    write_model = WriteModel(write_engine, accepted.cap_ledger_slots)
    write_model.ensure_cap(accepted.btc_cap_satoshis)
    assert write_model.cap_status() == (accepted.btc_cap, accepted.btc_cap)

    with pytest.raises(ValueError, match="BTC_CAP"):
        _settings(monkeypatch, "92233720368.54775808")
    # and the database indeed holds no more: the limit is the schema's, not a guess
    with pytest.raises(DataError):
        WriteModel(write_engine, 16).ensure_cap(cap.MAX_CAP_SATOSHIS + 1)
