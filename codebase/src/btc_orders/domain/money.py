"""Exact money: parsing fiat amounts and exchange rates, and pricing an order in BTC.

Every conversion between text and numbers happens here. Nothing in this module
touches a float: amounts and rates are `Decimal`, BTC is counted in integer
satoshis and only formatted as a decimal string at the edge.
"""

import re
from decimal import Context, Decimal
from fractions import Fraction

SATOSHIS_PER_BTC = 100_000_000
FIAT_DECIMAL_PLACES = 2
MAX_AMOUNT_EXCLUSIVE = Decimal(1_000_000_000)

# Plain decimal notation only: digits, optionally a point and more digits.
# No sign, no exponent, no NaN/Infinity, no whitespace, no thousands separators.
_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Longest text accepted before the range check: 9 integer digits, a point, 2
# decimals, plus generous room for leading zeros. Keeps huge inputs cheap to refuse.
_MAX_AMOUNT_TEXT = 64
_MAX_RATE_TEXT = 64
# Decimal operations round to the context's precision in *significant digits*;
# this context is wide enough that scaling and quantizing any value we accept is exact.
_EXACT = Context(prec=200)


class MoneyError(ValueError):
    """A value that is not acceptable as money; the message says what to fix."""


class JsonNumber(str):
    """The exact source text of a JSON number with a fraction or exponent.

    The request body is parsed with `parse_float=JsonNumber`, so a number such as
    `123.45` reaches validation as its literal text and never becomes a float.
    """


def parse_amount(value: object) -> Decimal:
    """Parse a fiat amount from a decimal string or an exact JSON number.

    Accepts `"123.45"`, `123.45` (as `JsonNumber`) and integers; refuses
    exponents, NaN, Infinity, signs, more than 2 decimal places and anything
    outside 0 < amount < 1,000,000,000.
    """
    if isinstance(value, bool):
        raise MoneyError('amount must be a decimal string such as "123.45", not a boolean')
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise MoneyError('amount must be a decimal string such as "123.45"')
    if len(text) > _MAX_AMOUNT_TEXT:
        raise MoneyError("amount has too many digits: it must be less than 1000000000")
    if text.startswith("-"):
        raise MoneyError("amount must be greater than 0")
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise MoneyError(
            'amount must be written in plain decimal notation such as "123.45" '
            "(no exponent, sign, spaces, NaN or Infinity)"
        )
    amount = Decimal(text)
    if _decimal_places(text) > FIAT_DECIMAL_PLACES:
        raise MoneyError("amount may have at most 2 decimal places")
    if amount <= 0:
        raise MoneyError("amount must be greater than 0")
    if amount >= MAX_AMOUNT_EXCLUSIVE:
        raise MoneyError("amount must be less than 1000000000")
    return amount


def parse_rate(value: object) -> Decimal:
    """Parse an exchange rate (fiat per 1 BTC) exactly as the exchange wrote it.

    The scale is kept (`"97012.340"` stays `Decimal("97012.340")`) so that the
    stored rate loses no digit. Refuses anything but a plain positive decimal.
    """
    if not isinstance(value, str) or len(value) > _MAX_RATE_TEXT:
        raise MoneyError("rate must be a decimal string")
    if not _PLAIN_DECIMAL.fullmatch(value):
        raise MoneyError(f"rate {value!r} is not a plain decimal")
    rate = Decimal(value)
    if rate <= 0:
        raise MoneyError(f"rate {value!r} is not positive")
    return rate


def bitcoin_satoshis(amount: Decimal, exchange_rate: Decimal) -> int:
    """BTC bought by `amount` fiat at `exchange_rate`, in satoshis, rounded up.

    Exact rational arithmetic: `ceil(amount / exchange_rate * 10^8)`. No decimal
    context is involved, so no digit of the quotient is lost before rounding.
    """
    if amount <= 0 or exchange_rate <= 0:
        raise MoneyError("amount and exchange rate must be positive")
    quotient = Fraction(amount) * SATOSHIS_PER_BTC / Fraction(exchange_rate)
    return -(-quotient.numerator // quotient.denominator)


def bitcoin_amount(amount: Decimal, exchange_rate: Decimal) -> Decimal:
    """`ceil_to_8_decimals(amount / exchange_rate)` as a Decimal with 8 places."""
    return satoshis_to_btc(bitcoin_satoshis(amount, exchange_rate))


def satoshis_to_btc(satoshis: int) -> Decimal:
    """An integer count of satoshis as BTC with exactly 8 decimal places."""
    return Decimal(satoshis).scaleb(-8, context=_EXACT)


def btc_to_satoshis(btc: Decimal) -> int:
    """BTC as an integer count of satoshis; refuses sub-satoshi precision."""
    satoshis = btc.scaleb(8, context=_EXACT)
    if satoshis != satoshis.to_integral_value(context=_EXACT):
        raise MoneyError(f"{plain(btc)} BTC is not a whole number of satoshis")
    return int(satoshis)


def plain(value: Decimal) -> str:
    """Any Decimal in plain decimal notation, never scientific: `0E-8` is `"0.00000000"`,
    `1E+2` is `"100"`. Every Decimal that reaches a message, a log line or a body goes
    through here (or through the formatters below, which do)."""
    return format(value, "f")


def format_btc(btc: Decimal) -> str:
    """BTC as a plain decimal string with 8 places: `"0.00127252"`."""
    return plain(btc.quantize(Decimal("0.00000001"), context=_EXACT))


def format_fiat(amount: Decimal) -> str:
    """A fiat amount as a plain decimal string with 2 places: `"123.40"`."""
    return plain(amount.quantize(Decimal("0.01"), context=_EXACT))


def format_rate(rate: Decimal) -> str:
    """A rate in plain notation with the scale it was given in: `"97012.340"`."""
    return plain(rate)


def _decimal_places(text: str) -> int:
    _, _, fraction = text.partition(".")
    return len(fraction)
