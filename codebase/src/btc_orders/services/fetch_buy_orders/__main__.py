"""`python -m btc_orders.services.fetch_buy_orders`: serve the API with uvicorn."""

from btc_orders.services.fetch_buy_orders.app import create_app
from btc_orders.services.http_service import serve
from btc_orders.settings import FetchBuyOrdersSettings


def main() -> None:
    serve("fetch_buy_orders", FetchBuyOrdersSettings, create_app)


if __name__ == "__main__":
    main()
