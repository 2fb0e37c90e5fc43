"""Domain errors. Each maps to one HTTP status and error code in one place (`web.errors`)."""

from decimal import Decimal

from btc_orders.domain import money


class DomainError(Exception):
    """Base of the errors a client can cause or must wait out."""

    code = "error"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class IdempotenceKeyReused(DomainError):
    """The key is bound to an order with another currency or amount."""

    code = "idempotence_key_reused"


class IdempotenceKeyConflict(DomainError):
    """The key in the header differs from the key in the body."""

    code = "idempotence_key_conflict"


class BtcCapExceeded(DomainError):
    """Storing the order would take the sum of all orders above the cap."""

    code = "btc_cap_exceeded"

    def __init__(self, requested: Decimal, available: Decimal) -> None:
        super().__init__(
            f"this order needs {money.format_btc(requested)} BTC but only {money.format_btc(available)} BTC "
            "is still available under the cap"
        )
        self.requested = requested
        self.available = available


class RateUnavailable(DomainError):
    """No fresh exchange rate can be had right now; retrying later may work."""

    code = "rate_unavailable"


class OrderInFlight(DomainError):
    """Another request with the same key is being stored right now."""

    code = "order_in_flight"


class UnknownReference(DomainError):
    """A paging reference or order id that the read model does not know."""

    code = "unknown_reference"


class OrderNotFound(DomainError):
    code = "order_not_found"


class ServiceUnavailable(DomainError):
    """A backing service (database, broker) cannot be reached right now."""

    code = "service_unavailable"
