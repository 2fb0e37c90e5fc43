"""`python -m btc_orders.services.create_buy_order`: serve the API with uvicorn."""

from btc_orders.services.create_buy_order.app import create_app
from btc_orders.services.http_service import serve
from btc_orders.settings import CreateBuyOrderSettings


def main() -> None:
    serve("create_buy_order", CreateBuyOrderSettings, create_app)


if __name__ == "__main__":
    main()
