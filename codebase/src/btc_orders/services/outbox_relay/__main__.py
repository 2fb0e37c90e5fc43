"""`python -m btc_orders.services.outbox_relay`: run the relay until SIGTERM."""

from collections.abc import Callable

from btc_orders import logs
from btc_orders.adapters import db
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
        # The idle poll's one connection, in autocommit: one round trip per probe, no commit.
        probe_engine=db.create_engine(settings.write_model_db_url, 1, "outbox_relay_probe", autocommit=True),
    )

    def run(stop: StopFlag) -> None:
        logs.event(
            log,
            "relay_started",
            batch_size=settings.outbox_batch_size,
            retention_seconds=settings.outbox_retention_seconds,
        )
        relay.run(stop)
        logs.event(log, "relay_stopped")

    return run


def main() -> None:
    run_worker("outbox_relay", OutboxRelaySettings, bootstrap)


if __name__ == "__main__":
    main()
