"""Decimal money: type checks, half-up rounding to the cent, parsing and formatting.

Money is `decimal.Decimal` everywhere in the ledger. A float is rejected with
`TypeError` rather than converted, because a binary float has already lost the
cent it was meant to carry (``0.1 + 0.2 != 0.3``).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

# Largest amount a payment or a principal may have: 12 digits before the
# decimal point and 2 after, the bound the payment API has always enforced.
# It is a plausibility bound, not a technical one: it is far above any car
# loan even in currencies with small units, so a longer number is a typo such
# as a pasted account number.
MAX_AMOUNT_DIGITS = 12
MAX_AMOUNT = Decimal(10) ** MAX_AMOUNT_DIGITS - CENT

# Plain amounts (1234.56) and amounts with comma thousands separators
# (1,234.56), as bank statements print them; at most two decimal places.
_AMOUNT = re.compile(r"^-?(\d+|\d{1,3}(,\d{3})+)(\.\d{1,2})?$")


def require_decimal(value: object, name: str) -> Decimal:
    """Return ``value`` if it is a finite Decimal; raise TypeError or ValueError.

    Floats, ints and strings raise TypeError so that no caller can pass money
    or a rate whose exact value is unknown.
    """
    if not isinstance(value, Decimal):
        raise TypeError(
            f"{name} must be a Decimal, got {type(value).__name__} {value!r}; "
            f"pass Decimal({str(value)!r})"
        )
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def round_cent(value: Decimal) -> Decimal:
    """Round to the cent, half-up (0.005 becomes 0.01, -0.005 becomes -0.01)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def parse_amount(text: str) -> Decimal:
    """Parse a money amount such as ``1234.56`` or ``1,234.56`` to a Decimal.

    Raises ValueError for anything else, including more than two decimal
    places, exponents, NaN and infinity.
    """
    cleaned = text.strip()
    if not _AMOUNT.match(cleaned):
        raise ValueError(
            f"invalid amount {text!r}: expected digits with at most two decimal "
            "places, e.g. 1234.56 or 1,234.56"
        )
    return Decimal(cleaned.replace(",", "")).quantize(CENT)


def check_money(value: Decimal, field: str, text: str | None = None) -> Decimal:
    """Return ``value`` if it is a positive amount in whole cents up to MAX_AMOUNT.

    Raises ValueError naming ``field``, the value (``text`` when given, as the
    user typed it) and the limit it breaks. This is the one rule for money
    entering the ledger: imported and posted payments and contract principals.
    """
    quoted = repr(text) if text is not None else str(value)
    require_decimal(value, field)
    if value != round_cent(value):
        raise ValueError(
            f"{field} {quoted} is invalid: expected at most 2 decimal places"
        )
    if value <= 0:
        raise ValueError(f"{field} {quoted} is invalid: expected a positive amount")
    if value > MAX_AMOUNT:
        raise ValueError(
            f"{field} {quoted} is too large: expected at most {MAX_AMOUNT} "
            f"({MAX_AMOUNT_DIGITS} digits before the decimal point)"
        )
    return value


def parse_money(text: str, field: str) -> Decimal:
    """Parse an amount with `parse_amount` and check it with `check_money`."""
    return check_money(parse_amount(text), field, text)


def parse_decimal(text: str, name: str) -> Decimal:
    """Parse a plain decimal number such as a rate (``0.12``); raise ValueError."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"invalid {name} {text!r}: expected a decimal number") from exc
    if not value.is_finite():
        raise ValueError(f"invalid {name} {text!r}: expected a finite number")
    return value


def format_amount(value: Decimal) -> str:
    """Format money as a string with exactly two decimals, e.g. ``8884.88``."""
    return str(round_cent(value) + 0)  # + 0 turns -0.00 into 0.00
