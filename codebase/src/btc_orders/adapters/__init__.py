"""Adapters at the edge: the databases, the broker, Coinbase and btc_price."""
