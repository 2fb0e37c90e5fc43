"""`python -m btc_orders.services.outbox_relay`: run the relay until SIGTERM."""

from collections.abc import Callable

from btc_orders import logs, urls
from btc_orders.services.outbox_relay.relay import Relay, log
from btc_orders.services.startup import engine_at_schema, run_worker
from btc_orders.services.worker import StopFlag
from btc_orders.settings import OutboxRelaySettings


def bootstrap(settings: OutboxRelaySettings) -> Callable[[StopFlag], None]:
    """The relay's composition root: the write model at the schema this code needs, then the relay."""
    engine = engine_at_schema(settings.write_model_db_url, 2, "outbox_relay", "write_model")
    relay = Relay(
        engine,
        settings.amqp_url,
        settings.outbox_batch_size,
        settings.outbox_poll_interval_seconds,
        retention_seconds=settings.outbox_retention_seconds,
    )

    def run(stop: StopFlag) -> None:
        logs.event(
            log,
            "relay_started",
            batch_size=settings.outbox_batch_size,
            retention_seconds=settings.outbox_retention_seconds,
            database=urls.mask(settings.write_model_db_url),
            broker=urls.mask(settings.amqp_url),
        )
        relay.run(stop)
        logs.event(log, "relay_stopped")

    return run


def main() -> None:
    run_worker("outbox_relay", OutboxRelaySettings, bootstrap)


if __name__ == "__main__":
    main()
