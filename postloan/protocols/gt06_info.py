"""Sub-types of the GT06 information transfer packet 0x94.

Layouts are from the Concox JM-VL03 protocol v1.1.2, "Information Transfer
Packet (0x94)". The device sends 0x94 in the long frame and needs no reply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from postloan.protocols.gt06_fields import Reader, bcd_digits, bcd_identifier

Attributes = dict[str, Any]


def _info_external_voltage(reader: Reader, attributes: Attributes) -> None:
    attributes["external_voltage"] = reader.u16() / 100  # volts, sent as 0.01 V


def _info_status_text(reader: Reader, attributes: Attributes) -> None:
    """Sub-type 0x04: "ALM1=FF;STA1=C0;DYD=01;..." (JM-VL03 v1.1.2)."""
    text = reader.rest().decode("ascii", errors="replace")
    fields = {}
    for part in text.split(";"):
        key, separator, value = part.partition("=")
        if separator:
            fields[key.strip()] = value.strip()
    attributes["status_text"] = text
    attributes["status_fields"] = fields
    dyd = fields.get("DYD", "")
    if dyd and all(c in "0123456789abcdefABCDEF" for c in dyd):
        # DYD bit 1: fuel/power cut; bits 2-3: cut postponed until the unit
        # has a fix or slows down.
        relay = int(dyd, 16)
        attributes["oil_cut"] = bool(relay & 0x02)
        attributes["oil_cut_pending"] = bool(relay & 0x0C)


def _info_door(reader: Reader, attributes: Attributes) -> None:
    flags = reader.u8()
    attributes["door"] = bool(flags & 0x01)
    attributes["door_trigger_high"] = bool(flags & 0x02)
    attributes["io_high"] = bool(flags & 0x04)


def _info_gps_status(reader: Reader, attributes: Attributes) -> None:
    """Sub-type 0x09: module status, satellites in the fix with their signal
    strengths, then visible satellites not in the fix with theirs."""
    attributes["gps_module_status"] = reader.u8()  # 1 searching, 2 2D, 3 3D, 4 sleep
    used = reader.take(reader.u8())
    attributes["satellites"] = len(used)
    attributes["satellite_signals"] = list(used)
    visible = reader.take(reader.u8())
    attributes["satellites_visible"] = len(visible)
    attributes["visible_signals"] = list(visible)


def _info_identifiers(reader: Reader, attributes: Attributes) -> None:
    attributes["imei"] = bcd_identifier(reader.take(8))
    attributes["imsi"] = bcd_identifier(reader.take(8))
    attributes["iccid"] = bcd_digits(reader.take(10))


def _info_rfid(reader: Reader, attributes: Attributes) -> None:
    attributes["rfid_hex"] = reader.rest().hex()


_INFO_READERS: Mapping[int, Callable[[Reader, Attributes], None]] = MappingProxyType(
    {
        0x00: _info_external_voltage,
        0x04: _info_status_text,
        0x05: _info_door,
        0x09: _info_gps_status,
        0x0A: _info_identifiers,
        0x1B: _info_rfid,
    }
)


def read_info(reader: Reader, attributes: Attributes) -> None:
    """Read the sub-type byte and the data that the sub-type defines.

    Data of an unknown sub-type stays unread for the caller to keep.
    """
    info_type = reader.u8()
    attributes["info_type"] = info_type
    read = _INFO_READERS.get(info_type)
    if read is not None:
        read(reader, attributes)
