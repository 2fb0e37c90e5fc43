"""fetch_buy_orders: `GET /buy_orders`, newest first, keyset-paged, from the read model."""
