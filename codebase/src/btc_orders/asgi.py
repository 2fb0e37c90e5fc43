"""ASGI app factories for gunicorn: `gunicorn 'btc_orders.asgi:create_buy_order()'`.

Each runs in a gunicorn worker. Any start-up failure (a setting included) exits the worker
with `EXIT_REFUSED`, gunicorn's "worker failed to boot": gunicorn then stops with the
worker's one line, instead of forking a new worker that fails the same way, forever.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from fastapi import FastAPI

from btc_orders.services.startup import EXIT_REFUSED, configured, starting
from btc_orders.settings import BaseServiceSettings, BtcPriceSettings, CreateBuyOrderSettings, FetchBuyOrdersSettings

SettingsT = TypeVar("SettingsT", bound=BaseServiceSettings)


def btc_price() -> FastAPI:
    from btc_orders.services.btc_price.app import create_app

    return _app("btc_price", BtcPriceSettings, create_app)


def create_buy_order() -> FastAPI:
    from btc_orders.services.create_buy_order.app import create_app

    return _app("create_buy_order", CreateBuyOrderSettings, create_app)


def fetch_buy_orders() -> FastAPI:
    from btc_orders.services.fetch_buy_orders.app import create_app

    return _app("fetch_buy_orders", FetchBuyOrdersSettings, create_app)


def _app(service: str, settings_class: type[SettingsT], create_app: Callable[[SettingsT], FastAPI]) -> FastAPI:
    with _boot_failure_stops_gunicorn(), starting(service):
        return create_app(configured(service, settings_class))


@contextmanager
def _boot_failure_stops_gunicorn() -> Iterator[None]:
    try:
        yield
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise SystemExit(EXIT_REFUSED) from None
        raise
