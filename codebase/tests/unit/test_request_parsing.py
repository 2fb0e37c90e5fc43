"""The create API's request rules below HTTP: media types, duplicate keys, the key header's forms."""

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from btc_orders.domain import money
from btc_orders.services.create_buy_order.schemas import (
    DuplicateKey,
    IdempotencyKeyHeader,
    _refuse_duplicate_keys,
    is_json_media_type,
)

KEY = uuid.UUID("5fa733ae-82b4-4ac0-8478-35ff30dae879")
header = TypeAdapter(IdempotencyKeyHeader)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ],
)
def test_json_media_types_and_none_are_json(content_type: str | None) -> None:
    assert is_json_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "*/*",
        "text/json",
    ],
)
def test_other_media_types_are_not(content_type: str) -> None:
    assert not is_json_media_type(content_type)


def _parse(body: str) -> object:
    return json.loads(body, parse_float=money.JsonNumber, object_pairs_hook=_refuse_duplicate_keys)


def test_a_key_given_twice_is_refused_by_name() -> None:
    with pytest.raises(DuplicateKey) as duplicate:
        _parse('{"amount": "1.00", "currency": "USD", "amount": "999999.00"}')
    assert duplicate.value.key == "amount"
    with pytest.raises(DuplicateKey, match="x"):
        _parse('{"a": {"x": 1, "x": 1}}')  # in any object, even with the same value
    assert _parse('{"amount": "1.00", "currency": "USD"}') == {"amount": "1.00", "currency": "USD"}


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=8), st.data())
def test_any_object_with_one_key_repeated_is_refused_and_without_is_kept(
    document: dict[str, str], data: st.DataObject
) -> None:
    assert _parse(json.dumps(document)) == document
    if document:
        key = data.draw(st.sampled_from(sorted(document)))
        text = json.dumps(document)[:-1] + ", " + json.dumps(key) + ": " + json.dumps(document[key]) + "}"
        with pytest.raises(DuplicateKey):
            _parse(text)


@pytest.mark.parametrize("value", [str(KEY), f'"{KEY}"', str(KEY).upper(), f' "{KEY}" '])
def test_the_key_header_is_accepted_bare_or_as_a_structured_field_string(value: str) -> None:
    assert header.validate_python(value) == KEY


@pytest.mark.parametrize(
    "value", ["", '""', '"', f'"{KEY}', f'{KEY}"', f'"{KEY}";a=1', f"'{KEY}'", f'"{KEY}\\"', "not-a-uuid", f'"{KEY}\t"']
)
def test_a_malformed_key_header_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        header.validate_python(value)
