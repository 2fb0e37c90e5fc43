"""btc_price: BTC's rate per fiat currency, from Coinbase, cached and coalesced."""
