"""Loose but explicit checks of contract identifiers: VIN, phone, ID, time zone.

Each ``normalize_*`` function returns the cleaned value or raises ValueError
with a message that names the value and the expected form.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass

# Check digit of 49 CFR Part 565 (North America): transliterate letters,
# weight positions 1-17 and sum modulo 11, writing remainder 10 as "X". ISO
# 3779 itself does not require it. So only a VIN made in North America (first
# character 1-5) must match, and elsewhere a mismatch is only reported.
_VIN_VALUES = {
    **{str(digit): digit for digit in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
# ISO 3779 leaves I, O and Q out of the VIN alphabet (confusable with 1 and 0).
_VIN_ALPHABET = frozenset(_VIN_VALUES)
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# ISO 3780 region codes of the first VIN character: 1, 4 and 5 are the United
# States, 2 Canada and 3 Mexico.
_NORTH_AMERICA = frozenset("12345")

# Digits with an optional leading +. E.164 allows at most 15 digits, and 6
# digits covers short local numbers. Spaces, dots, hyphens and parentheses
# are dropped before the check.
_PHONE = re.compile(r"^\+?\d{6,15}$")
_PHONE_SEPARATORS = re.compile(r"[\s.\-()]")

# National ID, passport and company registration numbers differ by country,
# so only the character set and length are checked.
_ID_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{3,31}$")

# Contract ids name files in the JSON ledger directory, so no path separators.
_CONTRACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Tracker ids: a GT06 IMEI (15 digits), a JT/T 808 terminal phone number
# (12 BCD digits in 2013, 20 in 2019) or a vendor's alphanumeric id.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")

# Plates: letters (Latin or CJK, e.g. 粤B12345), digits, space and hyphen.
_PLATE = re.compile(r"^[\w][\w \-·]{1,14}$")


@dataclass(frozen=True, slots=True)
class VinCheck:
    """A normalised VIN and whether its position-9 check digit matches.

    ``check_digit_valid`` is None when position 9 is not a digit or X, so the
    VIN cannot be using the check digit at all.
    """

    vin: str
    check_digit_valid: bool | None


def vin_check_digit(vin: str) -> str:
    """Return the 49 CFR Part 565 check digit ("0"-"9" or "X") of a 17-char VIN."""
    pairs = zip(vin, _VIN_WEIGHTS, strict=True)
    total = sum(_VIN_VALUES[char] * weight for char, weight in pairs)
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def check_vin(text: str) -> VinCheck:
    """Validate a VIN: 17 characters of A-Z and 0-9 without I, O or Q.

    A VIN made in North America (first character 1-5) must also carry the
    right check digit in position 9. Raises ValueError naming the VIN.
    """
    vin = normalize_vin(text)
    if len(vin) != 17:
        raise ValueError(
            f"VIN {text!r} is invalid: expected 17 characters, got {len(vin)}"
        )
    bad = sorted(set(vin) - _VIN_ALPHABET)
    if bad:
        raise ValueError(
            f"VIN {text!r} is invalid: {''.join(bad)!r} not allowed "
            "(only A-Z and 0-9, without I, O and Q)"
        )
    expected = vin_check_digit(vin)
    if vin[0] in _NORTH_AMERICA and vin[8] != expected:
        raise ValueError(
            f"VIN {text!r} is invalid: check digit (position 9) is {vin[8]!r}, "
            f"expected {expected!r}; a VIN made in North America (first "
            "character 1-5) must carry the 49 CFR Part 565 check digit"
        )
    if vin[8] not in "0123456789X":
        return VinCheck(vin, None)
    return VinCheck(vin, vin[8] == expected)


def normalize_vin(text: str) -> str:
    """Return a VIN as stored and compared: stripped and upper-cased."""
    return text.strip().upper()


def normalize_phone(text: str) -> str:
    """Return the phone number without separators, e.g. ``+8613800138000``."""
    phone = _PHONE_SEPARATORS.sub("", text)
    if not _PHONE.match(phone):
        raise ValueError(
            f"phone {text!r} is invalid: expected 6 to 15 digits with an optional "
            "leading +, e.g. +86 138 0013 8000"
        )
    return phone


def normalize_id_number(text: str) -> str:
    """Return a borrower ID number, stripped and upper-cased."""
    value = text.strip().upper()
    if not _ID_NUMBER.match(value):
        raise ValueError(
            f"ID number {text!r} is invalid: expected 4 to 32 letters, digits "
            "or hyphens"
        )
    return value


def normalize_time_zone(text: str) -> str:
    """Return an IANA time zone name such as ``Asia/Shanghai`` after checking it."""
    name = text.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"time zone {text!r} is invalid: expected an IANA name such as "
            "Asia/Shanghai or Europe/Lisbon"
        ) from exc
    return name


def normalize_contract_id(text: str) -> str:
    """Return a contract id after checking that it is safe as a file name."""
    value = text.strip()
    if not _CONTRACT_ID.match(value):
        raise ValueError(
            f"contract id {text!r} is invalid: expected 1 to 64 letters, digits, "
            "dots, hyphens or underscores, starting with a letter or digit"
        )
    return value


def normalize_device_id(text: str) -> str:
    """Return a tracker id (IMEI, JT/T 808 terminal number or vendor id)."""
    value = text.strip()
    if not _DEVICE_ID.match(value):
        raise ValueError(
            f"device id {text!r} is invalid: expected 1 to 40 letters, digits, "
            "hyphens or underscores"
        )
    return value


def normalize_plate(text: str) -> str:
    """Return a licence plate, stripped and upper-cased."""
    value = text.strip().upper()
    if not _PLATE.match(value):
        raise ValueError(
            f"plate {text!r} is invalid: expected 2 to 15 letters, digits, "
            "spaces or hyphens"
        )
    return value
