"""BTC buy orders: a CQRS microservice suite (write model, events, read model)."""
