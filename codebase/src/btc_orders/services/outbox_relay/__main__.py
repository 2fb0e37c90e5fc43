"""`python -m btc_orders.services.outbox_relay`: run the relay until SIGTERM."""

from btc_orders import logs
from btc_orders.services import configured, engine_at_schema, serve_metrics, starting
from btc_orders.services.outbox_relay.relay import Relay, log
from btc_orders.services.worker import StopFlag
from btc_orders.settings import OutboxRelaySettings


def main() -> None:
    settings = configured("outbox_relay", OutboxRelaySettings)
    with starting("outbox_relay"):
        engine = engine_at_schema(settings.write_model_db_url, 2, "outbox_relay", "write_model")
        stop = StopFlag()
        serve_metrics(settings)
    logs.event(
        log, "relay_started", batch_size=settings.outbox_batch_size, retention_seconds=settings.outbox_retention_seconds
    )
    Relay(
        engine,
        settings.amqp_url,
        settings.outbox_batch_size,
        settings.outbox_poll_interval_seconds,
        retention_seconds=settings.outbox_retention_seconds,
    ).run(stop)
    logs.event(log, "relay_stopped")


if __name__ == "__main__":
    main()
