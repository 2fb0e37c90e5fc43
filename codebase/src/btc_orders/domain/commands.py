"""Commands: what a caller asks the service layer to do, free of any transport."""

from dataclasses import dataclass

from btc_orders.domain.orders import OrderRequest


@dataclass(frozen=True, slots=True)
class PlaceBuyOrder:
    """Buy BTC as `request` asks, once per its idempotence key (SPEC 3.1).

    The key is already resolved: where it came from (body or header) is the HTTP layer's business.
    `request_id` follows the order into its logs and its event.
    """

    request: OrderRequest
    request_id: str | None = None
