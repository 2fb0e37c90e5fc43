"""`python -m btc_orders.services.read_model_sync`: project events until SIGTERM."""

from collections.abc import Callable

from btc_orders import logs, urls
from btc_orders.services.read_model_sync.projector import Projector, log
from btc_orders.services.startup import engine_at_schema, run_worker
from btc_orders.services.worker import StopFlag
from btc_orders.settings import ReadModelSyncSettings


def bootstrap(settings: ReadModelSyncSettings) -> Callable[[StopFlag], None]:
    """The projector's composition root: the read model at the schema this code needs, then the projector."""
    engine = engine_at_schema(settings.read_model_db_url, 2, "read_model_sync", "read_model")
    projector = Projector(engine, settings.amqp_url, settings.sync_prefetch, settings.sync_batch_wait_seconds)

    def run(stop: StopFlag) -> None:
        logs.event(
            log,
            "sync_started",
            prefetch=settings.sync_prefetch,
            database=urls.mask(settings.read_model_db_url),
            broker=urls.mask(settings.amqp_url),
        )
        projector.run(stop)
        logs.event(log, "sync_stopped")

    return run


def main() -> None:
    run_worker("read_model_sync", ReadModelSyncSettings, bootstrap)


if __name__ == "__main__":
    main()
