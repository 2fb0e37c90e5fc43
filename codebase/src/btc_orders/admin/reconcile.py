"""Compare the read model with the write model by sequence ranges, and repair it.

Both databases are read in chunks of consecutive sequences (keyset ranges,
so every chunk costs the same). A read row is right when every field equals the write model's, as the
event would have carried it. Repairing writes the write model's version: safe
while `read_model_sync` runs, since both write identical rows for a sequence. A row's stored
document (the JSON the API serves) must be the rendering of the write model's fields too.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, text

from btc_orders.adapters.outbox import highest_order_sequence
from btc_orders.adapters.projection import document, highest_sequence
from btc_orders.domain import orders

FIELDS = orders.RESOURCE_FIELDS  # what a read-model row must agree on with the write model
# A read-model row is the event's `order` (the resource's fields and `sequence`): the write model's
# columns are selected as the read model holds them (money as text), field by field, by name.
_WRITE_CHUNK = text(
    f"""
    SELECT {", ".join(f"{name}::{orders.READ_TYPES[name]} AS {name}" for name in orders.EVENT_FIELDS)}
    FROM buy_order
    WHERE sequence > :after AND sequence <= :until
    ORDER BY sequence
    """  # noqa: S608  (fixed column names; values are parameters)
)
_READ_CHUNK = text(
    f"""
    SELECT sequence, {", ".join(FIELDS)}, document
    FROM buy_order_view
    WHERE sequence > :after AND sequence <= :until
    ORDER BY sequence
    """  # noqa: S608  (fixed column names; values are parameters)
)
_UPSERT_COLUMNS = ", ".join(("sequence", *FIELDS, "event_id", "document"))
# A chunk's rows in one statement (the read model's statement-level triggers run once per chunk), as
# one JSON array read into the table's own row type: each column typed by the table itself.
_UPSERT = text(
    f"""
    INSERT INTO buy_order_view ({_UPSERT_COLUMNS})
    SELECT {_UPSERT_COLUMNS} FROM jsonb_populate_recordset(NULL::buy_order_view, CAST(:rows AS jsonb))
    ON CONFLICT (sequence) DO UPDATE SET
        {", ".join(f"{name} = EXCLUDED.{name}" for name in (*FIELDS, "document"))}
    """  # noqa: S608  (fixed column names; values are parameters)
)
_DELETE = text("DELETE FROM buy_order_view WHERE sequence = ANY(CAST(:sequences AS bigint[]))")


@dataclass
class Report:
    checked: int = 0
    missing: list[int] = field(default_factory=list)
    differing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    repaired: int = 0

    @property
    def clean(self) -> bool:
        return not (self.missing or self.differing or self.extra)


def sequence_ranges(highest: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(after, until] ranges covering 1..highest."""
    for after in range(0, highest, chunk):
        yield after, min(after + chunk, highest)


def reconcile(
    write_engine: Engine,
    read_engine: Engine,
    repair: bool,
    chunk: int = 5000,
    progress: Callable[[int], None] = lambda _: None,
    force: bool = False,
) -> Report:
    """Compare every sequence; with `repair`, make the read model equal the write model.

    `force` rewrites every row whether it differs or not (a rebuild).
    """
    report = Report()
    with write_engine.connect() as write, read_engine.connect() as read:
        highest = max(highest_order_sequence(write), highest_sequence(read))
    for after, until in sequence_ranges(highest, chunk):
        bounds = {"after": after, "until": until}
        with write_engine.connect() as write:
            expected = {row.sequence: row for row in write.execute(_WRITE_CHUNK, bounds)}
        with read_engine.connect() as read:
            actual = {row.sequence: row for row in read.execute(_READ_CHUNK, bounds)}
        to_write = []
        for sequence, row in expected.items():
            found = actual.get(sequence)
            if found is None:
                report.missing.append(sequence)
            elif any(getattr(found, name) != getattr(row, name) for name in FIELDS) or _stale_document(found, row):
                report.differing.append(sequence)
            elif not force:
                continue
            to_write.append(row)
        extra = sorted(set(actual) - set(expected))
        report.extra.extend(extra)
        report.checked += len(expected)
        if repair and (to_write or extra):
            _repair(read_engine, to_write, extra)
            report.repaired += len(to_write) + len(extra)
        progress(until - after)
    return report


def _repair(read_engine: Engine, rows: list[Any], extra: list[int]) -> None:
    with read_engine.begin() as connection:
        if rows:
            connection.execute(
                _UPSERT,
                {
                    "rows": orjson.dumps(
                        [
                            {
                                **{name: getattr(row, name) for name in ("sequence", *FIELDS)},
                                "event_id": _event_id(row),
                                "document": _document(row),
                            }
                            for row in rows
                        ]
                    ).decode()
                },
            )
        if extra:
            connection.execute(_DELETE, {"sequences": extra})


def _document(row: Any) -> str:
    return document(row._mapping)


def _stale_document(found: Any, expected: Any) -> bool:
    return bool(found.document != _document(expected))


def _event_id(row: Any) -> Any:
    # Rows written by a repair carry the order id as their event id: there is no event.
    return row.id
