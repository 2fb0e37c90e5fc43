"""The query parameters of `GET /buy_orders` that need more than a type (the page size, timestamps)
and the `Link` header of a page."""

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import quote, urlencode

from pydantic import BeforeValidator, Field, WithJsonSchema

from btc_orders.adapters.read_model import PageBody

PageSize = Annotated[int, Field(ge=1, le=1000)]
DEFAULT_PAGE_SIZE = 10

_RFC3339 = re.compile(
    r"(?P<seconds>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d+))?(?P<offset>[Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(value: object) -> datetime:
    """An RFC 3339 timestamp with its offset (`Z` or `+hh:mm`); a naive one is refused.

    The read model keeps microseconds: a finer fraction is rounded up to the next microsecond,
    which keeps both bounds exact (`created_at >= t` and `created_at < t` select the same orders
    for `t` as for its ceiling, since no stored time lies strictly between them).
    """
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be an RFC 3339 timestamp with an offset, such as 2026-11-24T12:00:00Z")
    fraction = match["fraction"] or ""
    offset = "+00:00" if match["offset"] in ("Z", "z") else match["offset"]
    try:
        parsed = datetime.fromisoformat(f"{match['seconds'].replace(' ', 'T')}.{fraction[:6]:0<6}{offset}")
        if fraction[6:].strip("0"):
            parsed += timedelta(microseconds=1)
        # in UTC: Postgres takes offsets up to 15:59 only, RFC 3339 up to 23:59
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"not a valid timestamp: {error}") from None


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-11-24T12:00:00Z"]}),
]

REFERENCES = ("last_reference", "first_reference")


def link_header(path: str, query: Iterable[tuple[str, str]], page: PageBody, reference: str | None) -> str | None:
    """RFC 8288 `Link` to the older (`next`) and newer (`prev`) pages, every other parameter kept.

    The URLs are relative references (path and query), resolved against the URL the client asked:
    they hold through a gateway or a proxy that keeps the path.
    """
    kept = [(name, value) for name, value in query if name not in REFERENCES]
    links = []
    older = page.last_reference or reference
    if page.has_older and older:
        links.append(f'<{path}?{urlencode([*kept, ("last_reference", older)], quote_via=quote)}>; rel="next"')
    newer = page.first_reference or reference
    if page.has_newer and newer:
        links.append(f'<{path}?{urlencode([*kept, ("first_reference", newer)], quote_via=quote)}>; rel="prev"')
    return ", ".join(links) or None
