"""The parts of `GET /buy_orders` and `GET /buy_orders/{id}` that are rules: timestamps, Prefer, links."""

from datetime import UTC, datetime

import pytest

from btc_orders.adapters.read_model import PageBody
from btc_orders.services.fetch_buy_orders.arrivals import preferred_wait
from btc_orders.services.fetch_buy_orders.query import link_header, parse_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T12:00:00Z", datetime(2026, 11, 24, 12, tzinfo=UTC)),
        ("2026-11-24t12:00:00z", datetime(2026, 11, 24, 12, tzinfo=UTC)),
        ("2026-11-24 13:00:00+01:00", datetime(2026, 11, 24, 12, tzinfo=UTC)),
        ("2026-11-24T12:00:00.5Z", datetime(2026, 11, 24, 12, 0, 0, 500000, tzinfo=UTC)),
        # finer than the stored microseconds: rounded up, which keeps >= and < exact
        ("2026-11-24T12:00:00.0000001Z", datetime(2026, 11, 24, 12, 0, 0, 1, tzinfo=UTC)),
        ("2026-11-24T12:00:00.0000010Z", datetime(2026, 11, 24, 12, 0, 0, 1, tzinfo=UTC)),
        ("2026-11-24T12:00:00.9999999Z", datetime(2026, 11, 24, 12, 0, 1, tzinfo=UTC)),
        # an offset Postgres cannot take (it stops at 15:59) is answered in UTC
        ("2000-01-13T05:22:47.161+23:44", datetime(2000, 1, 12, 5, 38, 47, 161000, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps_are_read_exactly_in_utc(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected and parsed.utcoffset() is not None


@pytest.mark.parametrize(
    "text",
    ["2026-11-24T12:00:00", "2026-11-24", "1700000000", "2026-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00", 17],
)
def test_naive_or_malformed_timestamps_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ([], None),
        (["wait=5"], 5),
        (["respond-async, wait=10"], 10),
        (["Wait = 7 ; foo=bar"], 7),
        (['wait="3"'], 3),
        (["handling=lenient", "wait=2"], 2),
        (["wait=2, wait=9"], 2),  # the first instance counts (RFC 7240 section 2)
        (["wait=soon"], None),
        (["wait=-1"], None),
        (["wait=²"], None),
        (["return=minimal"], None),
    ],
)
def test_the_wait_preference_is_read_as_rfc_7240_says(headers: list[str], wait: int | None) -> None:
    assert preferred_wait(headers) == wait


def page(first: str | None, last: str | None, more: bool, other: bool, direction: str = "older") -> PageBody:
    return PageBody(b"", first, last, more, other, direction)  # type: ignore[arg-type]


def test_links_keep_every_other_parameter_and_name_only_pages_that_exist() -> None:
    query = [("currency", "USD"), ("page_size", "3"), ("currency", "EUR"), ("last_reference", "r")]
    assert link_header("/buy_orders", query, page("a", "b", True, True), "r") == (
        '</buy_orders?currency=USD&page_size=3&currency=EUR&last_reference=b>; rel="next", '
        '</buy_orders?currency=USD&page_size=3&currency=EUR&first_reference=a>; rel="prev"'
    )
    assert link_header("/buy_orders", [], page("a", "b", False, False), None) is None
    # an empty page in the newer direction: older orders are found from the reference itself
    assert link_header("/buy_orders", [("first_reference", "r")], page(None, None, False, True, "newer"), "r") == (
        '</buy_orders?last_reference=r>; rel="next"'
    )
    # timestamps are percent-encoded (a + would read as a space)
    assert "created_lt=2026-01-01T00%3A00%3A00%2B01%3A00" in (
        link_header("/buy_orders", [("created_lt", "2026-01-01T00:00:00+01:00")], page("a", "b", True, False), None)
        or ""
    )
