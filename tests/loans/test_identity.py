"""VIN, phone, ID number, time zone and contract id checks."""

from __future__ import annotations

import pytest

from postloan.loans.identity import (
    check_vin,
    normalize_contract_id,
    normalize_id_number,
    normalize_phone,
    normalize_plate,
    normalize_time_zone,
    vin_check_digit,
)


@pytest.mark.parametrize(
    ("vin", "valid"),
    [
        ("1M8GDM9AXKP042788", True),  # check digit X (remainder 10)
        ("11111111111111111", True),
        ("LSVAU2180N2183294", False),  # made in China: a mismatch is accepted
        ("WVWZZZ1JZXW000001", None),  # European VIN: Z in position 9, no check digit
    ],
)
def test_check_vin_reports_check_digit(vin: str, valid: bool | None) -> None:
    assert check_vin(vin).check_digit_valid is valid


def test_check_vin_normalises_case_and_space() -> None:
    assert check_vin(" 1m8gdm9axkp042788 ").vin == "1M8GDM9AXKP042788"


def test_vin_check_digit_known_value() -> None:
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"


@pytest.mark.parametrize(
    ("vin", "message"),
    [
        ("1M8GDM9AXKP04278", "expected 17 characters, got 16"),
        ("1M8GDM9AXKP042788A", "expected 17 characters, got 18"),
        ("1M8GDM9AXKP04278O", "'O' not allowed"),
        ("IM8GDM9AXKP042788", "'I' not allowed"),
        ("QM8GDM9AXKP042788", "'Q' not allowed"),
        ("1M8GDM9AXKP04278-", "'-' not allowed"),
    ],
)
def test_check_vin_rejects_invalid(vin: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_vin(vin)


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("+86 138 0013 8000", "+8613800138000"),
        ("(021) 6234-5678", "02162345678"),
        ("13800138000", "13800138000"),
    ],
)
def test_normalize_phone_drops_separators(phone: str, expected: str) -> None:
    assert normalize_phone(phone) == expected


@pytest.mark.parametrize(
    "phone", ["12ab567", "12345", "+1234567890123456", "++8613800"]
)
def test_normalize_phone_rejects_invalid(phone: str) -> None:
    with pytest.raises(ValueError, match="expected 6 to 15 digits"):
        normalize_phone(phone)


def test_normalize_id_number_accepts_resident_id_with_x() -> None:
    assert normalize_id_number("11010119900307451x") == "11010119900307451X"


@pytest.mark.parametrize("id_number", ["12", "ab cd", "-1234"])
def test_normalize_id_number_rejects_invalid(id_number: str) -> None:
    with pytest.raises(ValueError, match="ID number"):
        normalize_id_number(id_number)


def test_normalize_time_zone_accepts_iana_name() -> None:
    assert normalize_time_zone("Asia/Shanghai") == "Asia/Shanghai"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "+08:00", "", "../../etc/passwd"])
def test_normalize_time_zone_rejects_unknown(zone: str) -> None:
    with pytest.raises(ValueError, match="expected an IANA name"):
        normalize_time_zone(zone)


@pytest.mark.parametrize("contract_id", ["../x", "a/b", "", ".hidden", "x" * 65])
def test_normalize_contract_id_rejects_path_like(contract_id: str) -> None:
    with pytest.raises(ValueError, match="contract id"):
        normalize_contract_id(contract_id)


def test_normalize_plate_accepts_chinese_plate() -> None:
    assert normalize_plate("粤b12345") == "粤B12345"
