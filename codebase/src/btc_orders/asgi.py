"""ASGI app factories for gunicorn: `gunicorn 'btc_orders.asgi:create_buy_order()'`."""

from fastapi import FastAPI

from btc_orders.services import configured
from btc_orders.settings import BtcPriceSettings, CreateBuyOrderSettings, FetchBuyOrdersSettings


def btc_price() -> FastAPI:
    from btc_orders.services.btc_price.app import create_app

    return create_app(configured("btc_price", BtcPriceSettings))


def create_buy_order() -> FastAPI:
    from btc_orders.services.create_buy_order.app import create_app

    return create_app(configured("create_buy_order", CreateBuyOrderSettings))


def fetch_buy_orders() -> FastAPI:
    from btc_orders.services.fetch_buy_orders.app import create_app

    return create_app(configured("fetch_buy_orders", FetchBuyOrdersSettings))
