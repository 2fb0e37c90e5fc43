"""`python -m btc_orders.admin`: day-two operations on the suite.

Exit codes scripts can trust: 0 all is well, 1 a problem was found (and not
repaired), 2 a usage or configuration error, 3 a backing service unreachable.
"""

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson
import pika.exceptions
from tqdm import tqdm

from btc_orders import logs, settings, urls
from btc_orders.adapters import cap_ledger, db, outbox, projection, rabbitmq
from btc_orders.admin import queues
from btc_orders.admin.reconcile import Report, reconcile
from btc_orders.domain import money
from btc_orders.domain.errors import ServiceUnavailable
from btc_orders.services.outbox_relay.relay import Relay

OK, PROBLEM, USAGE, UNREACHABLE = 0, 1, 2, 3
# What says a backing service is away, whatever carries it.
_UNREACHABLE: tuple[type[Exception], ...] = (*db.DATABASE_ERRORS, ServiceUnavailable, *rabbitmq.BROKER_ERRORS)


class AdminSettings(settings.MigrationSettings, settings.AmqpSettings):
    """The write model, the read model and the broker."""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    config = settings.load(AdminSettings)
    logs.configure("admin", "WARNING", None)  # the CLI talks to people on stdout; only problems are logged
    for handler in logging.getLogger().handlers:  # ... and on stderr, so that `--json` output stays JSON
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    # pika logs each failed connection attempt (a traceback included): an unreachable broker is the
    # CLI's own one line below.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    command: Callable[[AdminSettings, argparse.Namespace], int] = arguments.command
    try:
        return command(config, arguments)
    except _UNREACHABLE as error:
        # Whatever carries it, one line: the runbooks run `admin status` during outages.
        cause = error.__cause__ if isinstance(error, ServiceUnavailable) and error.__cause__ else error
        broker = isinstance(cause, rabbitmq.BROKER_ERRORS)
        why = rabbitmq.reason(cause) if broker else f"{type(cause).__name__}: {db.first_line(cause)}"
        print(f"a backing service is unreachable: {why} ({_settings_of(config, broker)})", file=sys.stderr)
        return UNREACHABLE


def _settings_of(config: AdminSettings, broker: bool) -> str:
    """The settings naming the service that failed, URLs masked (`urls.mask`)."""
    if broker:
        return f"AMQP_URL={urls.mask(config.amqp_url)}"
    return (
        f"WRITE_MODEL_DB_URL={urls.mask(config.write_model_db_url)}, "
        f"READ_MODEL_DB_URL={urls.mask(config.read_model_db_url)}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btc-orders-admin",
        description="Day-two operations on the BTC buy-order suite. Settings come from the environment "
        "(WRITE_MODEL_DB_URL, READ_MODEL_DB_URL, AMQP_URL), then .env.",
        epilog="exit codes: 0 all is well, 1 a problem was found, 2 usage or configuration error, "
        "3 a backing service is unreachable",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="cap used and left, outbox backlog, queue depths, read-model lag")
    status.add_argument("--json", action="store_true", help="one JSON object instead of text")
    status.set_defaults(command=status_command)

    check = commands.add_parser("reconcile", help="compare the read model with the write model (and repair it)")
    check.add_argument("--repair", action="store_true", help="make the read model equal the write model")
    check.add_argument("--chunk", type=int, default=5000, help="sequences compared per round (default 5000)")
    check.set_defaults(command=reconcile_command)

    rebuild = commands.add_parser(
        "rebuild-read-model", help="rewrite every read-model row from the write model (safe while the worker runs)"
    )
    rebuild.add_argument("--chunk", type=int, default=5000, help="orders per transaction (default 5000)")
    rebuild.set_defaults(command=rebuild_command)

    dead = commands.add_parser("replay-dead-letters", help="move dead letters back to the queue, or print them")
    dead.add_argument("--print", action="store_true", dest="print_only", help="print them and leave them there")
    dead.add_argument("--limit", type=int, default=None, help="at most this many messages")
    dead.set_defaults(command=dead_letters_command)

    migrate = commands.add_parser(
        "migrate-topology",
        help="redeclare queues an older version declared with other arguments, keeping every message",
    )
    migrate.set_defaults(command=migrate_topology_command)

    outbox = commands.add_parser("outbox", help="list unsent outbox rows, or send them now")
    outbox_commands = outbox.add_subparsers(required=True, metavar="ACTION")
    listing = outbox_commands.add_parser("list", help="unsent rows, oldest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(command=outbox_list_command)
    resend = outbox_commands.add_parser("resend", help="publish unsent rows now (or mark sent ones unsent again)")
    resend.add_argument(
        "--from-sequence",
        type=int,
        default=None,
        help="mark the events of orders from this sequence on as unsent, so that they are published again",
    )
    resend.set_defaults(command=outbox_resend_command)
    return parser


def status_command(config: AdminSettings, arguments: argparse.Namespace) -> int:
    write_engine = db.create_engine(config.write_model_db_url, 1, "admin")
    read_engine = db.create_engine(config.read_model_db_url, 1, "admin")
    cap_status = cap_ledger.cap_status_with(write_engine)
    with write_engine.connect() as connection:
        backlog = outbox.backlog(connection)
    with read_engine.connect() as connection:
        read_max = projection.highest_sequence(connection)
    queue, dead = _queue_depths(config.amqp_url)
    cap, remaining = cap_status or (None, None)  # no ledger until create_buy_order first started
    report = {
        "cap_btc": money.format_btc(cap) if cap is not None else None,
        "cap_used_btc": money.format_btc(cap - remaining) if cap is not None and remaining is not None else None,
        "cap_remaining_btc": money.format_btc(remaining) if remaining is not None else None,
        "outbox_backlog": backlog.unsent,
        "outbox_oldest_unsent_age_seconds": round(backlog.oldest_age_seconds, 3) if backlog.unsent else 0,
        "queue_depth": queue,
        "dead_letter_depth": dead,
        "write_model_max_sequence": backlog.max_sequence,
        "read_model_max_sequence": read_max,
        "read_model_lag": max(backlog.max_sequence - read_max, 0),
    }
    if arguments.json:
        print(orjson.dumps(report).decode())
    else:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key.replace('_', ' '):<{width}}  {value}")
    return OK


def _queue_depths(amqp_url: str) -> tuple[int, int]:
    connection, _broker = rabbitmq.connect(amqp_url, "admin")
    try:
        channel = rabbitmq.declare_topology(connection.channel())
        depths = [
            channel.queue_declare(name, passive=True).method.message_count
            for name in (rabbitmq.QUEUE, rabbitmq.DEAD_LETTER_QUEUE)
        ]
        return depths[0], depths[1]
    finally:
        connection.close()


def reconcile_command(config: AdminSettings, arguments: argparse.Namespace) -> int:
    report = _run_reconcile(config, arguments.chunk, repair=arguments.repair, force=False, label="reconcile")
    for name in ("missing", "differing", "extra"):
        sequences: list[int] = getattr(report, name)
        if sequences:
            shown = ", ".join(map(str, sequences[:20])) + (" …" if len(sequences) > 20 else "")
            print(f"{name} in the read model: {len(sequences)} (sequences {shown})")
    print(f"checked {report.checked} orders; {'repaired ' + str(report.repaired) if arguments.repair else ''}".strip())
    if report.clean:
        print("the read model equals the write model")
        return OK
    return OK if arguments.repair else PROBLEM


def rebuild_command(config: AdminSettings, arguments: argparse.Namespace) -> int:
    report = _run_reconcile(config, arguments.chunk, repair=True, force=True, label="rebuild")
    print(
        f"rebuilt {report.repaired} read-model rows from {report.checked} orders "
        f"({len(report.missing)} were missing, {len(report.differing)} differed, {len(report.extra)} removed)"
    )
    return OK


def _run_reconcile(config: AdminSettings, chunk: int, repair: bool, force: bool, label: str) -> Report:
    if chunk < 1:
        raise SystemExit("--chunk must be at least 1")
    write_engine = db.create_engine(config.write_model_db_url, 1, "admin")
    read_engine = db.create_engine(config.read_model_db_url, 1, "admin")
    with write_engine.connect() as connection:
        highest = outbox.highest_order_sequence(connection)
    with tqdm(total=highest, desc=label, unit="order", unit_scale=True, file=sys.stderr) as bar:
        return reconcile(write_engine, read_engine, repair=repair, chunk=chunk, progress=bar.update, force=force)


def dead_letters_command(config: AdminSettings, arguments: argparse.Namespace) -> int:
    with queues.broker(config.amqp_url) as broker:
        waiting = broker.depth(rabbitmq.DEAD_LETTER_QUEUE)
        count = waiting if arguments.limit is None else min(waiting, arguments.limit)
        if arguments.print_only:
            # Each one to the back of the dead letters, a fresh copy: printing counts no delivery.
            moved = broker.move(rabbitmq.DEAD_LETTER_QUEUE, count, queues.to_queue(rabbitmq.DEAD_LETTER_QUEUE), _print)
        else:
            with tqdm(total=count, desc="dead letters", unit="msg", file=sys.stderr) as bar:
                # Back to the main queue through the exchange; removed from the dead letters only
                # once the broker confirmed the copies.
                moved = broker.move(
                    rabbitmq.DEAD_LETTER_QUEUE, count, queues.to_events_exchange, lambda chunk: bar.update(len(chunk))
                )
    print(f"{'printed' if arguments.print_only else 'moved back'} {moved} dead letter(s)", file=sys.stderr)
    return OK


def _print(chunk: list[queues.Delivery]) -> None:
    for delivery in chunk:
        reason = (delivery.properties.headers or {}).get("x-first-death-reason", "?")
        document = {"reason": reason, "message_id": delivery.properties.message_id, "body": delivery.body.decode()}
        print(orjson.dumps(document).decode())


def migrate_topology_command(config: AdminSettings, arguments: argparse.Namespace) -> int:
    with queues.broker(config.amqp_url) as broker:
        for spec in queues.TOPOLOGY:
            try:
                queues.migrate(broker, spec, print)
            except (pika.exceptions.ChannelClosedByBroker, RuntimeError) as error:
                print(f"{spec.name}: not migrated: {error}; stop its consumers and run this again", file=sys.stderr)
                return PROBLEM
    return OK


def outbox_list_command(config: AdminSettings, arguments: argparse.Namespace) -> int:
    engine = db.create_engine(config.write_model_db_url, 1, "admin")
    with engine.connect() as connection:
        rows = outbox.list_unsent(connection, arguments.limit)
    now = datetime.now(UTC)
    for row in rows:
        age = (now - row.created_at).total_seconds()
        print(
            f"{row.id}\tsequence {row.order_sequence}\tevent {row.event_id}\tage {age:.1f} s\t"
            f"request {row.request_id or '-'}"
        )
    print(f"{len(rows)} unsent row(s) shown", file=sys.stderr)
    return OK


def outbox_resend_command(config: AdminSettings, arguments: argparse.Namespace) -> int:
    engine = db.create_engine(config.write_model_db_url, 1, "admin")
    if arguments.from_sequence is not None:
        with engine.begin() as connection:
            marked, pruned = outbox.mark_unsent_from(connection, arguments.from_sequence)
        print(f"marked {marked} event(s) unsent; the relay publishes them again", file=sys.stderr)
        if pruned:
            print(
                f"{pruned} order(s) from sequence {arguments.from_sequence} on have no outbox event any more "
                "(sent, then pruned after OUTBOX_RETENTION_SECONDS): nothing to resend for them; "
                "`reconcile --repair` brings the read model level with the write model",
                file=sys.stderr,
            )
            return PROBLEM
        return OK
    with engine.connect() as connection:
        backlog = outbox.unsent_count(connection)
    relay = Relay(engine, config.amqp_url, name="admin")
    sent = 0
    with tqdm(total=backlog, desc="outbox", unit="event", file=sys.stderr) as bar:
        while published := relay.relay_once():
            sent += published
            bar.update(published)
    relay.close()
    print(f"published {sent} event(s)", file=sys.stderr)
    return OK


if __name__ == "__main__":
    sys.exit(main())
