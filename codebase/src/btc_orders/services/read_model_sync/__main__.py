"""`python -m btc_orders.services.read_model_sync`: project events until SIGTERM."""

from btc_orders import logs
from btc_orders.services import configured, engine_at_schema, serve_metrics, starting
from btc_orders.services.read_model_sync.projector import Projector, log
from btc_orders.services.worker import StopFlag
from btc_orders.settings import ReadModelSyncSettings


def main() -> None:
    settings = configured("read_model_sync", ReadModelSyncSettings)
    with starting("read_model_sync"):
        engine = engine_at_schema(settings.read_model_db_url, 2, "read_model_sync", "read_model")
        stop = StopFlag()
        serve_metrics(settings)
    logs.event(log, "sync_started", prefetch=settings.sync_prefetch)
    Projector(engine, settings.amqp_url, settings.sync_prefetch, settings.sync_batch_wait_seconds).run(stop)
    logs.event(log, "sync_stopped")


if __name__ == "__main__":
    main()
