"""The money rules: exact parsing and the BTC amount rounded up to the satoshi."""

import logging
import re
from decimal import Decimal
from fractions import Fraction

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from btc_orders import logs
from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded

amounts_in_cents = st.integers(min_value=1, max_value=99_999_999_999)
rates = st.builds(
    lambda digits, scale: Decimal(digits).scaleb(-scale),
    st.integers(min_value=1, max_value=10**30),
    st.integers(min_value=0, max_value=20),
)


def exact_ceil_to_8_places(amount: Decimal, rate: Decimal) -> Fraction:
    quotient = Fraction(amount) / Fraction(rate)
    scaled = quotient * 10**8
    satoshis = -(-scaled.numerator // scaled.denominator)
    return Fraction(satoshis, 10**8)


@given(amounts_in_cents, rates)
def test_bitcoin_amount_is_the_exact_quotient_rounded_up_to_8_places(cents: int, rate: Decimal) -> None:
    amount = Decimal(cents).scaleb(-2)
    result = money.bitcoin_amount(amount, rate)
    assert Fraction(result) == exact_ceil_to_8_places(amount, rate)
    assert Fraction(result) >= Fraction(amount) / Fraction(rate)
    assert Fraction(result) - Fraction(1, 10**8) < Fraction(amount) / Fraction(rate)
    assert result.as_tuple().exponent == -8


@given(amounts_in_cents, rates)
def test_an_order_buys_at_least_one_satoshi(cents: int, rate: Decimal) -> None:
    assert money.bitcoin_satoshis(Decimal(cents).scaleb(-2), rate) >= 1


def test_a_quotient_that_28_digit_precision_would_round_wrongly_is_still_exact() -> None:
    # 1/3 of a satoshi above a whole number of satoshis at the 29th significant digit.
    rate = Decimal("3")
    amount = Decimal("999999999.99")
    assert money.format_btc(money.bitcoin_amount(amount, rate)) == "333333333.33000000"
    tricky_rate = Decimal("0.300000000000000000000000000001")
    exact = exact_ceil_to_8_places(Decimal("0.03"), tricky_rate)
    assert Fraction(money.bitcoin_amount(Decimal("0.03"), tricky_rate)) == exact


def test_the_original_curl_order_is_priced_to_the_satoshi() -> None:
    assert money.format_btc(money.bitcoin_amount(Decimal("123.45"), Decimal("97012.34"))) == "0.00127252"


@given(amounts_in_cents)
def test_amounts_round_trip_through_their_text(cents: int) -> None:
    amount = Decimal(cents).scaleb(-2)
    text = money.format_fiat(amount)
    assert money.parse_amount(text) == amount
    assert money.parse_amount(money.JsonNumber(text)) == amount


@pytest.mark.parametrize(
    "value",
    ["123.45", "1", "0.01", "999999999.99", "00010.5", 7, money.JsonNumber("12.30")],
)
def test_good_amounts_are_accepted(value: object) -> None:
    assert money.parse_amount(value) == Decimal(str(value))


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("1e3", "plain decimal"),
        (money.JsonNumber("1e3"), "plain decimal"),
        (money.JsonNumber("1e-7"), "plain decimal"),
        ("NaN", "plain decimal"),
        ("Infinity", "plain decimal"),
        ("-1", "greater than 0"),
        ("0", "greater than 0"),
        ("0.00", "greater than 0"),
        ("0.001", "at most 2 decimal places"),
        ("1000000000", "less than 1000000000"),
        ("1" * 400, "too many digits"),
        ("", "plain decimal"),
        (" 1", "plain decimal"),
        ("1,000", "plain decimal"),
        ("+1", "plain decimal"),
        ("1.", "plain decimal"),
        (True, "boolean"),
        ([1], "decimal string"),
        (None, "decimal string"),
        (1.5, "decimal string"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(value: object, complaint: str) -> None:
    with pytest.raises(money.MoneyError, match=complaint):
        money.parse_amount(value)


def test_rates_keep_every_digit_and_their_scale() -> None:
    assert money.format_rate(money.parse_rate("97012.340")) == "97012.340"
    assert money.format_rate(money.parse_rate("0.00000001")) == "0.00000001"


@pytest.mark.parametrize("value", ["0", "0.00", "-5.00", "1e5", "abc", "", None, 97012.34])
def test_unusable_rates_are_refused(value: object) -> None:
    with pytest.raises(money.MoneyError):
        money.parse_rate(value)


@given(st.integers(min_value=0, max_value=21_000_000 * 10**8))
def test_satoshis_and_btc_convert_both_ways(satoshis: int) -> None:
    assert money.btc_to_satoshis(money.satoshis_to_btc(satoshis)) == satoshis


def test_sub_satoshi_btc_is_refused() -> None:
    with pytest.raises(money.MoneyError):
        money.btc_to_satoshis(Decimal("0.000000001"))


def test_btc_is_formatted_in_plain_notation() -> None:
    assert money.format_btc(Decimal("1E-8")) == "0.00000001"


# --- money as text in messages and logs: plain decimal notation, never scientific ------------

_SCIENTIFIC = re.compile(r"[0-9]E[-+]?[0-9]", re.IGNORECASE)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_plain_is_the_same_number_without_an_exponent(value: Decimal) -> None:
    text = money.plain(value)
    assert "e" not in text.lower()
    assert Decimal(text) == value


@given(st.integers(min_value=0, max_value=2**63 - 1), st.integers(min_value=0, max_value=2**63 - 1))
def test_the_cap_refusal_names_btc_in_plain_text_with_8_places(requested: int, available: int) -> None:
    error = BtcCapExceeded(money.satoshis_to_btc(requested), money.satoshis_to_btc(available))
    assert not _SCIENTIFIC.search(error.message), error.message
    numbers = re.findall(r"[0-9]+\.[0-9]{8}", error.message)
    assert [money.btc_to_satoshis(Decimal(number)) for number in numbers] == [requested, available]


def test_nothing_left_under_the_cap_reads_0_00000000() -> None:
    error = BtcCapExceeded(Decimal("1E-8"), money.satoshis_to_btc(0))
    assert error.message == "this order needs 0.00000001 BTC but only 0.00000000 BTC is still available under the cap"


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=8)
    | st.builds(money.satoshis_to_btc, st.integers(0, 10**12))
)
def test_a_decimal_in_a_log_line_is_plain_text(value: Decimal) -> None:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "order_created", None, None)
    record.event_fields = {"bitcoin_amount": value}
    line = orjson.loads(logs.JsonLinesFormatter().format(record))
    assert line["bitcoin_amount"] == money.plain(value)
    assert not _SCIENTIFIC.search(line["bitcoin_amount"])
