"""`python -m btc_orders.services.btc_price`: serve the API with uvicorn."""

from btc_orders.services.btc_price.app import create_app
from btc_orders.services.http_service import serve
from btc_orders.settings import BtcPriceSettings


def main() -> None:
    serve("btc_price", BtcPriceSettings, create_app)


if __name__ == "__main__":
    main()
