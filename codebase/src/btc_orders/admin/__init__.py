"""The admin CLI: `python -m btc_orders.admin --help` (12-factor admin processes)."""
